"""Workload replay of the cache: a stream of requests with Zipf-distributed repeats, paraphrases, hard negatives and
one-off prompts through the real pipeline hooks (Redis, Postgres, the local embedding model) for a dedicated org."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

from tqdm import tqdm

from evals.cache.evaluation import ROOT, Pair, SweepResult, sweep_table
from finops import clock

# --- workload replay ------------------------------------------------------------------------


@dataclass
class ReplayResult:
    requests: int
    exact_hits: int
    semantic_hits: int
    misses: int
    bypassed: int
    wrong_answers: int
    cost_without_cache: Decimal
    cost_with_cache: Decimal
    saved: Decimal
    model: str
    seconds: float
    mix: dict[str, int]

    @property
    def hit_rate(self) -> float:
        return (self.exact_hits + self.semantic_hits) / self.requests if self.requests else 0.0


def replay_workload(
    pairs: list[Pair], *, requests: int = 1500, seed: int = 11, model: str = "gpt-4o-mini", progress: bool = True
) -> ReplayResult:
    """Drive the real cache hooks with a realistic request stream for the `cache-eval` org (sync entry point)."""
    from apps.cache.services import cache_invalidate
    from apps.ledger.services import prices_load_fixture
    from apps.tenancy.services import api_key_create, member_get_or_create, org_get_or_create, team_get_or_create

    prices_load_fixture(path=ROOT / "fixtures" / "prices.json")
    org = org_get_or_create(name="cache-eval")
    team = team_get_or_create(org=org, name="eval")
    member = member_get_or_create(team=team, username="cache-eval")
    from apps.tenancy.models import ApiKey

    key = ApiKey.objects.filter(member=member, name="cache eval replay", revoked_at=None).first()
    key = key or api_key_create(member=member, name="cache eval replay").api_key
    cache_invalidate(org_id=org.id)
    from apps.cache.semantic import store_budget
    from apps.embeddings.embeddings import local_embedder

    local_embedder.load()
    stream = _workload(pairs, requests=requests, seed=seed)
    # The replay runs requests back to back, far above a real request rate: the store budget (a guard against
    # load, apps.cache.semantic) would shed entries that real traffic stores; the replay measures the cache.
    store_budget.unlimited = True
    try:
        return asyncio.run(_replay(stream, org=org, team=team, member=member, key=key, model=model, progress=progress))
    finally:
        store_budget.unlimited = False


def _workload(pairs: list[Pair], *, requests: int, seed: int) -> list[tuple[str, str, str]]:
    """(kind, intent id, prompt): 300 popular intents with Zipf popularity, asked in their usual words most
    of the time, sometimes paraphrased, sometimes with a number/name/negation changed (a different
    intent), plus one-off prompts nobody repeats."""
    rng = random.Random(seed)
    popular = pairs[: min(300, len(pairs))]
    long_tail = [p.origin for p in pairs[len(popular) :]] or [f"One-off question number {i}?" for i in range(requests)]
    weights = [1 / (rank + 1) ** 1.1 for rank in range(len(popular))]
    stream = []
    for n in range(requests):
        roll = rng.random()
        if roll < 0.15:
            stream.append(
                (
                    "one-off",
                    f"tail-{n}",
                    long_tail[n % len(long_tail)] if n < len(long_tail) else f"{long_tail[n % len(long_tail)]} (case {n})",
                )
            )
            continue
        i = rng.choices(range(len(popular)), weights=weights)[0]
        pair = popular[i]
        if roll < 0.70:
            stream.append(("repeat", f"intent-{i}", pair.origin))
        elif roll < 0.90 or not pair.hard_negatives:
            stream.append(("paraphrase", f"intent-{i}", pair.similar))
        else:
            kind, text = rng.choice(pair.hard_negatives)
            stream.append((f"hard-{kind}", f"intent-{i}-{kind}-{text}", text))
    return stream


async def _replay(stream, *, org, team, member, key, model: str, progress: bool) -> ReplayResult:
    from apps.cache.lookup import CacheRequest, cache_lookup_exact, cache_lookup_semantic, cache_plan, cache_store
    from apps.ledger.money import ZERO
    from apps.ledger.pricing import cost_compute
    from apps.ledger.selectors import price_in_force_async
    from apps.tenancy.types import Caller
    from finops.asyncdb import close_pools
    from finops.tokens import count_message_tokens

    price = await price_in_force_async(model=model, on=clock.today())
    if price is None:
        raise RuntimeError(f"{model} has no price in force; run `manage.py import_prices fixtures/prices.json`")
    caller = Caller(api_key_id=key.id, api_key_prefix=key.prefix, org_id=org.id, team_id=team.id, member_id=member.id)
    rng = random.Random(5)
    started = time.monotonic()
    counts: Counter[str] = Counter()
    mix: Counter[str] = Counter()
    wrong = 0
    without = with_cache = saved = ZERO
    answers: dict[str, int] = {}  # intent → completion tokens of its (first) answer
    for kind, intent, prompt in tqdm(stream, desc="replay", unit="req", disable=not progress):
        mix[kind] += 1
        messages = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": prompt}]
        prompt_tokens = count_message_tokens(messages)
        state = await cache_plan(
            request=CacheRequest(
                caller=caller,
                request_id=uuid.uuid4(),
                requested_model=model,
                messages=messages,
                body={"model": model, "messages": messages, "temperature": 0},
                prompt_tokens_estimate=prompt_tokens,
            )
        )
        completion_tokens = answers.setdefault(intent, rng.randint(60, 400))
        upstream_cost = cost_compute(price=price, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        without += upstream_cost
        lookup = await cache_lookup_exact(state=state)
        if lookup.hit is None:
            lookup = await cache_lookup_semantic(state=state)
        if lookup.hit is not None:
            counts[lookup.status] += 1
            saved += lookup.hit.saved_usd
            if lookup.hit.response["choices"][0]["message"]["content"] != f"answer to {intent}":
                wrong += 1
            continue
        counts["bypass" if lookup.status == "bypass" else "miss"] += 1
        with_cache += upstream_cost
        answer = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": f"answer to {intent}"}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        await cache_store(state=state, response=answer, answer_model=model)
    await close_pools()
    return ReplayResult(
        requests=len(stream),
        exact_hits=counts["exact"],
        semantic_hits=counts["semantic"],
        misses=counts["miss"],
        bypassed=counts["bypass"],
        wrong_answers=wrong,
        cost_without_cache=without,
        cost_with_cache=with_cache,
        saved=saved,
        model=model,
        seconds=time.monotonic() - started,
        mix=dict(mix),
    )


def _runtime_note() -> str:
    from apps.embeddings.embeddings import local_embedder

    return f", {local_embedder.runtime} runtime" if local_embedder.runtime else ""


def replay_markdown(result: ReplayResult, sweep: SweepResult | None) -> str:
    mix = ", ".join(f"{k} {v}" for k, v in sorted(result.mix.items()))
    pct = (result.saved / result.cost_without_cache * 100) if result.cost_without_cache else Decimal(0)
    lines = [
        "### Semantic cache: threshold sweep and workload replay (`make eval`)",
        "",
    ]
    if sweep is not None:
        lines += [
            f"Threshold sweep on {sweep.label} (full table and guidance: `docs/cache-threshold-runbook.md`):",
            "",
            sweep_table(sweep, thresholds=[0.85, 0.88, 0.90, 0.92, 0.95]),
            "",
        ]
    lines += [
        f"Workload replay through the real cache hooks (Redis + pgvector + local MiniLM{_runtime_note()}), {result.requests} requests to "
        f"`{result.model}` with Zipf-popular intents ({mix}); token counts per answer drawn from 60–400:",
        "",
        "| tier | hits | share of requests |",
        "|---|---:|---:|",
        f"| exact | {result.exact_hits} | {result.exact_hits / result.requests:.1%} |",
        f"| semantic | {result.semantic_hits} | {result.semantic_hits / result.requests:.1%} |",
        f"| miss (went upstream) | {result.misses + result.bypassed} | {(result.misses + result.bypassed) / result.requests:.1%} |",
        "",
        f"Cost without the cache ${result.cost_without_cache:.4f}, with it ${result.cost_with_cache:.4f}: "
        f"**${result.saved:.4f} saved ({pct:.1f} %)** (sum of `saved_usd`, each hit priced at the list price in force). "
        f"Wrong answers served: **{result.wrong_answers}** (hard-negative requests are distinct intents; any hit on them counts). "
        f"Replay took {result.seconds:.1f} s.",
    ]
    return "\n".join(lines)
