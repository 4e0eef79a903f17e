import hashlib
from io import StringIO

import pytest
from django.core.management import call_command
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from apps.tenancy.models import ApiKey
from apps.tenancy.selectors import api_key_for_secret
from apps.tenancy.services import api_key_revoke


def test_create_api_key_prints_the_key_once_and_stores_only_its_hash(db):
    out, err = StringIO(), StringIO()
    call_command("create_api_key", "--org", "Acme", "--team", "Search", "--user", "alice", stdout=out, stderr=err)
    secret = out.getvalue().strip()
    assert secret.startswith("fo-") and len(secret) > 40
    key = ApiKey.objects.get()
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert key.prefix == secret[:10]
    assert secret not in err.getvalue()
    stored = [str(v) for v in ApiKey.objects.values_list(*[f.attname for f in ApiKey._meta.concrete_fields]).get()]
    assert secret not in stored
    assert (key.org.slug, key.team.slug, key.member.username) == ("acme", "search", "alice")


def test_a_second_key_for_the_same_user_reuses_the_tenancy(db):
    for _ in range(2):
        call_command("create_api_key", "--org", "Acme", "--team", "Search", "--user", "alice", stdout=StringIO(), stderr=StringIO())
    keys = ApiKey.objects.all()
    assert keys.count() == 2 and len({k.member_id for k in keys}) == 1


def test_a_revoked_key_no_longer_resolves(make_tenant):
    tenant = make_tenant()
    assert api_key_for_secret(secret=tenant.secret) == tenant.api_key
    api_key_revoke(api_key=tenant.api_key)
    assert api_key_for_secret(secret=tenant.secret) is None
    assert api_key_for_secret(secret=tenant.secret + "x") is None


class WhoAmI(APIView):
    def get(self, request):
        return Response({"org": request.user.org.slug, "key": request.auth.prefix})


@pytest.mark.parametrize("header", ["", "Bearer ", "Basic abc", "Bearer not-a-key"])
def test_key_authentication_rejects_missing_or_bad_keys(db, header):
    request = APIRequestFactory().get("/whoami", HTTP_AUTHORIZATION=header)
    assert WhoAmI.as_view()(request).status_code in (401, 403)


def test_key_authentication_scopes_the_caller_to_its_org(make_tenant):
    tenant = make_tenant(org="Globex")
    request = APIRequestFactory().get("/whoami", HTTP_AUTHORIZATION=f"Bearer {tenant.secret}")
    response = WhoAmI.as_view()(request)
    assert response.status_code == 200
    assert response.data == {"org": "globex", "key": tenant.api_key.prefix}
