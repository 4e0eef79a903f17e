from __future__ import annotations

from django.conf import settings
from django.db import models


class Organization(models.Model):
    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    # Prompt and response text are kept only when the org opts in; otherwise hashes and counts.
    store_prompts = models.BooleanField(default=False)
    # A client may name a concrete model and skip the router.
    allow_model_pinning = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Team(models.Model):
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="teams")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["org__name", "name"]
        constraints = [models.UniqueConstraint(fields=["org", "slug"], name="team_unique_slug_per_org")]

    def __str__(self) -> str:
        return f"{self.org.slug}/{self.slug}"


class Member(models.Model):
    """A person (or service) that makes LLM calls; optionally a Django user for the admin/API."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="members")
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="members")
    username = models.CharField(max_length=150)
    email = models.EmailField(blank=True)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="finops_member"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["org__name", "username"]
        constraints = [models.UniqueConstraint(fields=["org", "username"], name="member_unique_username_per_org")]

    def __str__(self) -> str:
        return f"{self.username} ({self.team})"


class ApiKey(models.Model):
    """Only the SHA-256 of the key is stored, plus a short prefix that people can recognise."""

    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="api_keys")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_keys")
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200, blank=True)
    prefix = models.CharField(max_length=16, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Enforced by the gateway (apps.tenancy.keys.api_key_rate_admit) on chat requests, within FINOPS_API_KEY_CACHE_SECONDS of an edit.
    rate_limit_per_minute = models.PositiveIntegerField(
        default=0, help_text="Chat requests per minute through the gateway (a sliding window); 0 = unlimited."
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.member.username})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class MemberTeamChange(models.Model):
    """History of team moves: a member's API keys follow the member (ApiKey.team), so that its spend is charged to
    the new team from the move on. Written only by `member_team_move`."""

    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="team_changes")
    from_team = models.ForeignKey(Team, null=True, on_delete=models.SET_NULL, related_name="+")
    to_team = models.ForeignKey(Team, null=True, on_delete=models.SET_NULL, related_name="+")
    # The names at the time: teams may be renamed or deleted later.
    from_team_label = models.CharField(max_length=200)
    to_team_label = models.CharField(max_length=200)
    keys_moved = models.PositiveIntegerField(default=0)
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    changed_by_label = models.CharField(max_length=150, blank=True)
    changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.member.username}: {self.from_team_label} → {self.to_team_label}"
