from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from django.db import transaction
from django.utils.text import slugify

from apps.tenancy.models import ApiKey, Member, Organization, Team
from finops import clock

KEY_PREFIX = "fo-"
PREFIX_LENGTH = 10


def api_key_hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


@dataclass(frozen=True)
class CreatedKey:
    api_key: ApiKey
    secret: str  # shown once, never stored


def org_get_or_create(*, name: str) -> Organization:
    org, _ = Organization.objects.get_or_create(slug=slugify(name), defaults={"name": name})
    return org


def team_get_or_create(*, org: Organization, name: str) -> Team:
    team, _ = Team.objects.get_or_create(org=org, slug=slugify(name), defaults={"name": name})
    return team


def member_get_or_create(*, team: Team, username: str, email: str = "") -> Member:
    member, _ = Member.objects.get_or_create(
        org=team.org, username=username, defaults={"team": team, "email": email}
    )
    return member


@transaction.atomic
def api_key_create(*, member: Member, name: str = "", rate_limit_per_minute: int = 0) -> CreatedKey:
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(
        member=member,
        team=member.team,
        org=member.org,
        name=name,
        prefix=secret[:PREFIX_LENGTH],
        key_hash=api_key_hash(secret),
        rate_limit_per_minute=rate_limit_per_minute,
    )
    return CreatedKey(api_key=api_key, secret=secret)


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = clock.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key
