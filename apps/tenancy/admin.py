from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from apps.tenancy.access import OrgScopedAdminMixin
from apps.tenancy.models import ApiKey, Member, MemberTeamChange, Organization, Team
from apps.tenancy.services import api_key_create, api_key_revoke, member_team_move


class TeamInline(admin.TabularInline):
    model = Team
    extra = 0
    fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


def _dashboard_link(url_name: str, pk: int) -> str:
    """The scoped cost dashboard (apps.reports) of an org or team."""
    try:
        url = reverse(url_name, args=[pk])
    except NoReverseMatch:  # reports not installed
        return "—"
    return format_html('<a href="{}">costs</a>', url)


@admin.register(Organization)
class OrganizationAdmin(OrgScopedAdminMixin, admin.ModelAdmin):
    org_field = "pk"
    list_display = ["name", "slug", "team_count", "store_prompts", "allow_model_pinning", "created_at", "dashboard"]
    readonly_fields = ["dashboard"]
    search_fields = ["name", "slug"]
    list_filter = ["store_prompts", "allow_model_pinning"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [TeamInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_teams=Count("teams"))

    @admin.display(ordering="_teams", description="teams")
    def team_count(self, obj) -> int:
        return obj._teams

    @admin.display(description="cost dashboard")
    def dashboard(self, obj) -> str:
        return _dashboard_link("reports_admin:org", obj.pk) if obj.pk else "—"


@admin.register(Team)
class TeamAdmin(OrgScopedAdminMixin, admin.ModelAdmin):
    list_display = ["name", "org", "member_count", "dashboard"]
    readonly_fields = ["dashboard"]
    list_filter = ["org"]
    list_select_related = ["org"]
    search_fields = ["name", "org__name"]
    prepopulated_fields = {"slug": ["name"]}

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_members=Count("members"))

    @admin.display(ordering="_members", description="members")
    def member_count(self, obj) -> int:
        return obj._members

    @admin.display(description="cost dashboard")
    def dashboard(self, obj) -> str:
        return _dashboard_link("reports_admin:team", obj.pk) if obj.pk else "—"


class MemberTeamChangeInline(admin.TabularInline):
    model = MemberTeamChange
    fk_name = "member"
    extra = 0
    can_delete = False
    fields = ["changed_at", "from_team_label", "to_team_label", "keys_moved", "changed_by_label"]
    readonly_fields = fields  # type: ignore[assignment]  # stubs type `fields` wider than a list of names
    verbose_name_plural = "team moves"

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class MemberForm(forms.ModelForm):
    class Meta:
        model = Member
        fields = ["username", "email", "org", "team", "user"]

    def clean(self):
        data = super().clean()
        team, org = data.get("team"), data.get("org")
        if team is not None and org is not None and team.org_id != org.pk:
            raise forms.ValidationError({"team": "Pick a team of the member's organization."})
        return data


@admin.register(Member)
class MemberAdmin(OrgScopedAdminMixin, admin.ModelAdmin):
    form = MemberForm
    list_display = ["username", "team", "org", "email", "user", "active_keys"]
    list_filter = ["org"]
    list_select_related = ["team", "org", "user"]
    search_fields = ["username", "email"]
    autocomplete_fields = ["user"]
    inlines = [MemberTeamChangeInline]

    def save_model(self, request: HttpRequest, obj: Member, form, change: bool) -> None:
        """A team change goes through the service: the member's keys follow it, and the move is recorded."""
        if not (change and "team" in form.changed_data):
            super().save_model(request, obj, form, change)
            return
        team = obj.team
        obj.team_id = form.initial["team"]  # the other fields are saved as usual; the move is the service's
        super().save_model(request, obj, form, change)
        move = member_team_move(member=obj, team=team, changed_by=request.user)
        if move is not None:
            self.message_user(request, f"{obj.username} moved to {team.name}: {move.keys_moved} API key(s) now charge it.")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_keys=Count("api_keys", filter=Q(api_keys__revoked_at__isnull=True)))

    @admin.display(ordering="_keys", description="active keys")
    def active_keys(self, obj) -> int:
        return obj._keys


@admin.register(ApiKey)
class ApiKeyAdmin(OrgScopedAdminMixin, admin.ModelAdmin):
    """Keys are created here through the service: the secret is shown once, in the success message."""

    list_display = [
        "prefix", "name", "member_name", "team_name", "org", "rate_limit", "created_at", "last_used_at", "revoked_at",
    ]  # fmt: skip
    list_filter = ["org", ("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["member", "team", "org"]
    search_fields = ["prefix", "name", "member__username"]
    fields = ["member", "name", "rate_limit_per_minute", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    autocomplete_fields = ["member"]
    actions = ["revoke_keys"]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "member"] if obj else self.readonly_fields

    @admin.display(description="rate limit", ordering="rate_limit_per_minute")
    def rate_limit(self, obj: ApiKey) -> str:
        return f"{obj.rate_limit_per_minute}/min" if obj.rate_limit_per_minute else "unlimited"

    # Names straight from the joined rows: Member.__str__ would follow team → org (queries per row).
    @admin.display(description="member", ordering="member__username")
    def member_name(self, obj: ApiKey) -> str:
        return obj.member.username

    @admin.display(description="team", ordering="team__name")
    def team_name(self, obj: ApiKey) -> str:
        return obj.team.name

    def save_model(self, request: HttpRequest, obj: ApiKey, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        created = api_key_create(member=obj.member, name=obj.name, rate_limit_per_minute=obj.rate_limit_per_minute)
        obj.pk = created.api_key.pk
        obj.__dict__.update(created.api_key.__dict__)
        self.message_user(
            request,
            f"API key created. Copy it now, it will not be shown again: {created.secret}",
            level=messages.WARNING,
        )

    @admin.action(description="Revoke selected keys")
    def revoke_keys(self, request: HttpRequest, queryset) -> None:
        count = 0
        for key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(api_key=key)
            count += 1
        self.message_user(request, f"Revoked {count} key(s).", level=messages.SUCCESS)
