from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.text import slugify

from apps.tenancy.models import ApiKey, Member, MemberTeamChange, Organization, Team
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
def member_team_move(*, member: Member, team: Team, changed_by=None) -> MemberTeamChange | None:
    """Move `member` to `team` (same org) and re-point every key of the member to it, with a history entry.

    The gateway charges a request to its key's team (ApiKey.team, copied at creation): without this, a member who
    changed team kept charging the old one. The keys follow within FINOPS_API_KEY_CACHE_SECONDS. None when the
    member is already in `team`.
    """
    locked = Member.objects.select_for_update().select_related("team").get(pk=member.pk)
    if team.org_id != locked.org_id:
        raise ValidationError("A member can only move to a team of the same organization.")
    previous = locked.team
    if previous.pk == team.pk:
        # A form may have saved the member already: re-point any key left behind all the same.
        ApiKey.objects.filter(member=locked).exclude(team=team).update(team=team)
        return None
    Member.objects.filter(pk=locked.pk).update(team=team)
    keys_moved = ApiKey.objects.filter(member=locked).exclude(team=team).update(team=team)
    member.team = team
    return MemberTeamChange.objects.create(
        member=locked,
        from_team=previous,
        to_team=team,
        from_team_label=str(previous),
        to_team_label=str(team),
        keys_moved=keys_moved,
        changed_by=changed_by if getattr(changed_by, "pk", None) else None,
        changed_by_label=getattr(changed_by, "username", "")[:150] if changed_by else "",
    )


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
