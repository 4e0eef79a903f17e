"""Who may see whose numbers: org scoping and the finance role (tenancy owns them; reports, the admins and the API use them).

Admin (finance's UI): superusers and the `finance` group see every org; any other staff member who is
a finops member sees their own org (and its teams) only; staff without a member see no figures. The
dashboards check this per page; the model admins of tenant data (keys, ledger rows, budgets, anomalies,
cache entries...) through `OrgScopedAdminMixin`, so another org's rows are neither listed nor opened
(the admin answers "doesn't exist" for their ids), nor offered in a form's choices or list filters.

API: an API key sees its org; a signed-in member sees their org; a superuser sees every org and may
narrow to one with `?org=<slug>`. Asking for another org's slug is refused (403) whether or not that
org exists, so the answer leaks nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied

from apps.tenancy.models import Organization, Team
from finops.errors import BadRequest, PermissionDenied

FINANCE_GROUP = "finance"


@dataclass(frozen=True)
class Scope:
    """A slice of the ledger: everything (no ids), one org, or one team of one org."""

    org_id: int | None = None
    team_id: int | None = None
    label: str = "All organizations"
    org_slug: str | None = None

    @property
    def level(self) -> str:
        return "team" if self.team_id else "org" if self.org_id else "all"

    def filter(self, queryset, *, org_field: str = "org_id", team_field: str = "team_id"):
        if self.org_id is not None:
            queryset = queryset.filter(**{org_field: self.org_id})
        if self.team_id is not None:
            queryset = queryset.filter(**{team_field: self.team_id})
        return queryset


GLOBAL = Scope()


def org_scope(org: Organization) -> Scope:
    return Scope(org_id=org.id, label=org.name, org_slug=org.slug)


def team_scope(team: Team) -> Scope:
    return Scope(org_id=team.org_id, team_id=team.id, label=f"{team.org.name} › {team.name}", org_slug=team.org.slug)


def is_finance(user) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    if user.is_superuser:
        return True
    cached = getattr(user, "_finops_is_finance", None)
    if cached is None:
        cached = user.groups.filter(name=FINANCE_GROUP).exists()
        user._finops_is_finance = cached
    return cached


def _member_org_id(user) -> int | None:
    member = getattr(user, "finops_member", None) if getattr(user, "pk", None) else None
    return member.org_id if member is not None else None


def admin_queryset_scope(user, queryset, *, org_field: str = "org"):
    """`queryset` cut to what this admin user may see: all of it (finance), one org's rows, or none.

    `org_field` is the lookup from the model to its organization ("org", "budget__org", "pk" for Organization
    itself). Rows without an org (cross-org anomalies, catch-all alert routes) are finance's only.
    """
    if is_finance(user):
        return queryset
    org_id = _member_org_id(user)
    if org_id is None:
        return queryset.none()
    return queryset.filter(**{org_field: org_id})


def _is_org_filter(entry) -> bool:
    name = entry if isinstance(entry, str) else entry[0] if isinstance(entry, (tuple, list)) else None
    return name is not None and (name == "org" or name.endswith("__org") or name == "org_id")


class OrgScopedAdminMixin:
    """For a ModelAdmin of tenant data: see the module docstring. Set `org_field` when it is not "org"."""

    org_field = "org"

    def get_queryset(self, request):
        return admin_queryset_scope(request.user, super().get_queryset(request), org_field=self.org_field)

    def get_list_filter(self, request):
        filters = super().get_list_filter(request)
        if is_finance(request.user):
            return filters
        return [f for f in filters if not _is_org_filter(f)]  # its choices would name every org

    def save_model(self, request, obj, form, change):
        # An org-less row (a global routing policy, a catch-all alert route) reaches every org: finance's only.
        if self.org_field == "org" and not is_finance(request.user) and getattr(obj, "org_id", False) is None:
            org_id = _member_org_id(request.user)
            if org_id is None:
                raise DjangoPermissionDenied("Only finance can create rows that apply to every organization.")
            obj.org_id = org_id
        super().save_model(request, obj, form, change)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        related = db_field.related_model
        if is_finance(request.user):
            pass
        elif related is Organization:
            kwargs["queryset"] = admin_queryset_scope(request.user, Organization.objects.all(), org_field="pk")
        elif related is not None and any(f.name == "org" and f.related_model is Organization for f in related._meta.fields):
            kwargs["queryset"] = admin_queryset_scope(request.user, related._default_manager.all())
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


def admin_home_scope(user) -> Scope | None:
    """The scope of the admin home dashboard; None: this staff member has no figures to see."""
    if is_finance(user):
        return GLOBAL
    org_id = _member_org_id(user)
    if org_id is None:
        return None
    return org_scope(Organization.objects.get(pk=org_id))


def admin_org_scope(user, org: Organization) -> Scope:
    if not is_finance(user) and _member_org_id(user) != org.id:
        raise DjangoPermissionDenied("You can only see your own organization's costs.")
    return org_scope(org)


def admin_team_scope(user, team: Team) -> Scope:
    if not is_finance(user) and _member_org_id(user) != team.org_id:
        raise DjangoPermissionDenied("You can only see your own organization's costs.")
    return team_scope(team)


def api_scope(user, *, org_slug: str | None = None) -> Scope:
    """The org an API caller may read. Raises finops PermissionDenied (403) for anything else."""
    api_key = getattr(user, "api_key", None)
    if api_key is not None:  # ApiKeyUser
        org = user.org
    elif getattr(user, "is_superuser", False):
        if not org_slug:
            return GLOBAL
        org = Organization.objects.filter(slug=org_slug).first()
        if org is None:
            raise BadRequest(f"No organization with slug {org_slug!r}.", param="org")
        return org_scope(org)
    else:
        org_id = _member_org_id(user)
        if org_id is None:
            raise PermissionDenied("This account is not linked to a finops member, so it has no organization to report on.")
        org = Organization.objects.get(pk=org_id)
    if org_slug and org_slug != org.slug:
        raise PermissionDenied("You can only read your own organization.", param="org")
    return org_scope(org)
