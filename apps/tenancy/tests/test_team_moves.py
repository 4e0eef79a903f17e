"""Issue #16 item 12: a member who changes team charges the new team — the member's keys follow the move, with a
history entry; through the admin, then a request through the real openai SDK and the live gateway."""

from __future__ import annotations

import openai
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from apps.gateway.tests.conftest import unique_prompt, wait_for_row
from apps.tenancy.models import ApiKey, MemberTeamChange
from apps.tenancy.services import api_key_create, member_team_move, org_get_or_create, team_get_or_create

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_team_move_in_the_admin_repoints_the_keys_and_the_next_request_charges_the_new_team(gateway_url, make_tenant, prices):
    alice = make_tenant(org="Acme", team="Search", user="alice")
    second = api_key_create(member=alice.member, name="ci")
    risk = team_get_or_create(org=alice.org, name="Risk")
    client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=alice.secret, max_retries=0)
    before = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": unique_prompt()}]
    )
    assert wait_for_row(before.headers["x-request-id"]).team_id == alice.team.id

    staff = Client()
    staff.force_login(get_user_model().objects.create_superuser("admin", "admin@example.com", "pw"))
    url = reverse("admin:tenancy_member_change", args=[alice.member.pk])
    form = {"username": "alice", "email": "", "org": alice.org.pk, "team": risk.pk, "user": ""}
    inline = {"team_changes-TOTAL_FORMS": "0", "team_changes-INITIAL_FORMS": "0"}
    response = staff.post(url, {**form, **inline})
    assert response.status_code == 302, response.content.decode()[:2000]

    assert set(ApiKey.objects.filter(member=alice.member).values_list("team_id", flat=True)) == {risk.id}
    move = MemberTeamChange.objects.get(member=alice.member)
    assert (move.from_team_id, move.to_team_id, move.keys_moved, move.changed_by_label) == (alice.team.id, risk.id, 2, "admin")
    assert (move.from_team_label, move.to_team_label) == ("acme/search", "acme/risk")
    page = staff.get(url).content.decode()
    assert "Team moves" in page and "acme/search" in page  # the history is on the member's page

    after = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": unique_prompt()}]
    )
    row = wait_for_row(after.headers["x-request-id"])
    assert (row.team_id, row.member_id, row.api_key_id) == (risk.id, alice.member.id, alice.api_key.id)
    assert second.api_key.id != alice.api_key.id


def test_a_member_cannot_move_to_another_orgs_team(make_tenant):
    from django.core.exceptions import ValidationError

    alice = make_tenant(org="Acme", team="Search", user="alice")
    elsewhere = team_get_or_create(org=org_get_or_create(name="Globex"), name="Risk")
    with pytest.raises(ValidationError):
        member_team_move(member=alice.member, team=elsewhere)
    assert ApiKey.objects.get(pk=alice.api_key.pk).team_id == alice.team.id
    assert not MemberTeamChange.objects.exists()
    assert member_team_move(member=alice.member, team=alice.team) is None  # not a move
