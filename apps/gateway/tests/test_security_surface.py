"""Issue #17, security: /metrics needs its token and names no tenant, provider rows cannot send the server's
secrets anywhere, and an upstream's error text never reaches an API caller. Through HTTP, on the real server
(uvicorn + finops.asgi) and the mock LLM; the admin through Django's test client.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from apps.budgets.models import Budget, BudgetCounter
from apps.budgets.selectors import period_start
from apps.budgets.services import budget_create
from apps.gateway.models import Provider
from apps.gateway.tests.conftest import unique_prompt
from apps.gateway.upstream_policy import base_url_refusal, key_env_refusal
from conftest import gateway_server
from finops import clock

METRICS_TOKEN = "metrics-token-for-the-tests-0123456789"


def chat(url: str, secret: str, model: str = "gpt-4o-mini", headers: dict | None = None, **body) -> requests.Response:
    return requests.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": unique_prompt("sec")}], **body},
        headers={"Authorization": f"Bearer {secret}", **(headers or {})},
        timeout=30,
    )


# --- /metrics ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_gateway(django_db_setup, mock_llm_url):
    with gateway_server(mock_llm_url=mock_llm_url, env={"FINOPS_METRICS_TOKEN": METRICS_TOKEN}) as url:
        yield url


@pytest.mark.django_db(transaction=True)
def test_a_metrics_scrape_without_the_token_is_refused_and_names_no_tenant(token_gateway, make_tenant, prices):
    tenant = make_tenant(org="Hushhush Industries", team="T", user="u")
    budget = budget_create(
        budget=Budget(scope="org", org=tenant.org, period="monthly", cap_usd=Decimal("10"), action="block", soft_pct=[80])
    )
    now = clock.now()
    BudgetCounter.objects.create(
        budget=budget, period_start=period_start("monthly", now), spent_usd=Decimal("9"), reserved_usd=0, updated_at=now
    )
    assert chat(token_gateway, tenant.secret).status_code == 200

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": METRICS_TOKEN}):
        refused = requests.get(f"{token_gateway}/metrics", headers=headers, timeout=10)
        assert refused.status_code == 401, headers
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["error"]["code"] == "metrics_unauthorized"
        assert "finops_" not in refused.text

    scraped = requests.get(f"{token_gateway}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert scraped.status_code == 200
    body = scraped.text
    assert 'finops_gateway_requests_total{cache_status="bypass",endpoint="chat_completions",outcome="served"}' in body
    assert f'finops_budget_utilisation_ratio{{org_id="{tenant.org.id}",scope="org"}} 0.9' in body
    assert "hushhush" not in body.lower()  # no org name or slug without FINOPS_METRICS_TENANT_LABELS


@pytest.mark.django_db(transaction=True)
def test_without_a_token_only_loopback_clients_may_scrape(gateway_url):
    assert requests.get(f"{gateway_url}/metrics", timeout=10).status_code == 200  # the test runner is on loopback
    # A client behind a proxy: uvicorn takes its address from X-Forwarded-For (sent by a trusted local proxy).
    remote = requests.get(f"{gateway_url}/metrics", headers={"X-Forwarded-For": "203.0.113.7"}, timeout=10)
    assert remote.status_code == 403
    assert "FINOPS_METRICS_TOKEN" in remote.json()["error"]["message"]


# --- provider rows -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["SECRET_KEY", "DATABASE_URL", "REDIS_URL", "FINOPS_METRICS_TOKEN", "POSTGRES_PASSWORD", "HOME", "AWS_SECRET_ACCESS_KEY"],
)
def test_only_upstream_key_variables_may_be_named(name, settings):
    assert key_env_refusal(name)
    settings.FINOPS = {**settings.FINOPS, "UPSTREAM_KEY_ENV_ALLOWED": ["*"]}
    # An operator's wildcard widens the allowlist, never to the server's own secrets.
    assert bool(key_env_refusal(name)) is (name not in ("HOME", "AWS_SECRET_ACCESS_KEY"))


@pytest.mark.parametrize("name", ["", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "FINOPS_UPSTREAM_VLLM_KEY"])
def test_upstream_key_variables_are_allowed(name):
    assert key_env_refusal(name) is None


@pytest.mark.parametrize(
    "url, allowed",
    [
        ("https://api.openai.com/v1", True),
        ("http://127.0.0.1:8001/v1", True),
        ("http://localhost:11434/v1", True),
        ("http://api.openai.com/v1", False),  # plain http to a public host
        ("https://169.254.169.254/latest/meta-data", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("http://2852039166/latest", False),  # 169.254.169.254 as one number
        ("https://[::ffff:169.254.169.254]/", False),
        ("http://metadata.google.internal/computeMetadata/v1", False),
        ("https://10.0.0.5/v1", False),  # private: only when FINOPS_UPSTREAM_HOSTS_ALLOWED lists it
        ("https://user:pw@api.openai.com/v1", False),
        ("ftp://api.openai.com/v1", False),
    ],
)
def test_base_urls_are_checked_against_the_host_policy(url, allowed):
    assert (base_url_refusal(url) is None) is allowed, base_url_refusal(url)


def test_the_mock_llms_host_is_allowed_over_http(settings):
    assert base_url_refusal("http://mock-llm:8001/v1")
    settings.FINOPS = {**settings.FINOPS, "MOCK_LLM_URL": "http://mock-llm:8001/v1"}  # compose's mock profile
    assert base_url_refusal("http://mock-llm:8001/v1") is None


def test_an_operator_allowlist_names_the_hosts_but_never_opens_metadata(settings):
    settings.FINOPS = {**settings.FINOPS, "UPSTREAM_HOSTS_ALLOWED": ["vllm.internal", "10.0.0.*"]}
    assert base_url_refusal("http://vllm.internal:8000/v1") is None
    assert base_url_refusal("http://10.0.0.5/v1") is None
    assert base_url_refusal("https://api.openai.com/v1")  # not listed
    assert base_url_refusal("http://127.0.0.1:8001/v1") is None  # loopback stays allowed
    settings.FINOPS = {**settings.FINOPS, "UPSTREAM_HOSTS_ALLOWED": ["*"]}
    assert base_url_refusal("http://169.254.169.254/")


@pytest.mark.django_db
def test_a_provider_saved_with_secret_key_is_refused_by_the_model_and_the_admin(client):
    provider = Provider(name="leak", base_url="https://api.example.com/v1", api_key_env="SECRET_KEY", served_models=["*"])
    with pytest.raises(ValidationError) as refused:
        provider.full_clean()
    assert "api_key_env" in refused.value.message_dict

    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    form = {
        "name": "leak", "base_url": "https://api.example.com/v1", "enabled": "on", "api_key_env": "SECRET_KEY",
        "served_models": '["*"]', "kind": "openai", "options": "{}", "timeout_s": "60", "connect_timeout_s": "5", "max_connections": "10",
    }  # fmt: skip
    response = client.post("/admin/gateway/provider/add/", form)
    assert response.status_code == 200  # the form again, with its error
    assert "holds one of this server&#x27;s own secrets" in response.content.decode()
    metadata = client.post(
        "/admin/gateway/provider/add/", {**form, "api_key_env": "OPENAI_API_KEY", "base_url": "http://169.254.169.254/v1"}
    )
    assert metadata.status_code == 200 and "cloud metadata address" in metadata.content.decode()
    assert not Provider.objects.exists()

    accepted = client.post("/admin/gateway/provider/add/", {**form, "api_key_env": "FINOPS_UPSTREAM_EXAMPLE_KEY"})
    assert accepted.status_code == 302, accepted.content.decode()[:2000]
    assert Provider.objects.get().api_key_env == "FINOPS_UPSTREAM_EXAMPLE_KEY"


@pytest.mark.django_db(transaction=True)
def test_a_provider_row_written_around_the_admin_is_not_used(make_tenant, prices, mock_llm_url):
    """A row that names SECRET_KEY (or a metadata address) is ignored at request time: its models are not served."""
    tenant = make_tenant(org="Rows", team="T", user="r")
    Provider.objects.create(name="leaky", base_url=mock_llm_url, api_key_env="SECRET_KEY", served_models=["gpt-4o-mini"])
    Provider.objects.create(
        name="metadata", base_url="http://169.254.169.254/v1", api_key_env="FINOPS_UPSTREAM_MOCK_KEY", served_models=["gpt-4o"]
    )
    Provider.objects.create(
        name="fine", base_url=mock_llm_url, api_key_env="FINOPS_UPSTREAM_MOCK_KEY", served_models=["gpt-4.1-nano"]
    )
    env = {
        "FINOPS_MOCK_LLM_URL": "",  # not mock mode: the provider rows are the upstreams
        "FINOPS_UPSTREAMS": "[]",
        "SECRET_KEY": "a-server-secret-that-must-never-leave-" + "x" * 30,
        "FINOPS_UPSTREAM_MOCK_KEY": "sk-upstream-test",
    }
    with gateway_server(mock_llm_url=mock_llm_url, env=env) as url:
        listed = requests.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {tenant.secret}"}, timeout=10)
        served = {m["id"] for m in listed.json()["data"]}
        assert "gpt-4.1-nano" in served
        assert not {"gpt-4o-mini", "gpt-4o"} & served
        assert chat(url, tenant.secret, model="gpt-4.1-nano").status_code == 200
        for model in ("gpt-4o-mini", "gpt-4o"):
            refused = chat(url, tenant.secret, model=model)
            assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_found", refused.text


# --- upstream errors ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_error_text_is_not_relayed(gateway_url, tenant, stream):
    """The mock answers 400 "Mock error 400." (and 400 with the text of a bad fault name): the caller gets the
    status class and a generic message; the upstream's words stay in the gateway's log."""
    for fault in ("400", "teapot-secret-internal-detail"):
        response = chat(gateway_url, tenant.secret, headers={"X-Mock-Error": fault}, stream=stream)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["message"] == "Upstream rejected the request: HTTP 400", error
        assert "Mock" not in response.text and "teapot" not in response.text
