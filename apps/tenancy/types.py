"""Who is calling: the resolved API key, as the request path sees it (a value, not a model instance)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Caller:
    api_key_id: int
    api_key_prefix: str
    org_id: int
    team_id: int
    member_id: int
    store_prompts: bool = False
    allow_model_pinning: bool = True
    rate_limit_per_minute: int = 0
