"""Which upstream serves which model: settings providers, admin rows, the mock toggle, and prices."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError

from apps.gateway.models import Provider
from apps.gateway.selectors import catalog_build

TODAY = dt.date(2026, 6, 1)


def price(model: str, provider: str = "openai", pk: int = 1, **window) -> dict:
    return {
        "id": pk, "provider": provider, "model": model, "input_per_1m": "1", "output_per_1m": "2", "cached_input_per_1m": None,
        "effective_from": window.get("effective_from", dt.date(2025, 1, 1)), "effective_to": window.get("effective_to"),
    }  # fmt: skip


def provider_row(name: str, models: list[str], *, enabled: bool = True, api_key_env: str = "") -> dict:
    return {"name": name, "base_url": f"https://{name}.example/v1/", "api_key_env": api_key_env, "served_models": models,
            "timeout_s": 30.0, "connect_timeout_s": 2.0, "max_connections": 10, "enabled": enabled}  # fmt: skip


@pytest.fixture
def no_mock(settings, monkeypatch):
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-test")
    settings.FINOPS = {
        **settings.FINOPS,
        "MOCK_LLM_URL": "",
        "UPSTREAMS": [
            {"name": "openai", "base_url": "https://api.openai.com/v1", "api_key_env": "TEST_OPENAI_KEY", "models": ["*"]}
        ],
    }


def test_a_wildcard_provider_serves_the_priced_models_of_its_own_name(no_mock):
    catalog = catalog_build(price_rows=[price("gpt-4o"), price("claude-x", provider="anthropic")], provider_rows=[])
    assert catalog.upstream_for("gpt-4o").name == "openai"
    assert catalog.upstream_for("gpt-4o").api_key == "sk-test"
    assert catalog.upstream_for("claude-x") is None
    assert not catalog.is_known("claude-x")


def test_admin_rows_add_providers_and_explicit_models_win(no_mock):
    rows = [provider_row("vllm", ["gpt-4o", "llama-local"])]
    catalog = catalog_build(price_rows=[price("gpt-4o"), price("llama-local", provider="self")], provider_rows=rows)
    assert catalog.upstream_for("gpt-4o").name == "vllm"
    assert catalog.upstream_for("llama-local").base_url == "https://vllm.example/v1"
    assert catalog.upstream_for("llama-local").api_key == "not-needed"


def test_a_disabled_row_removes_the_settings_provider_and_a_missing_key_skips_it(no_mock, monkeypatch):
    catalog = catalog_build(price_rows=[price("gpt-4o")], provider_rows=[provider_row("openai", ["*"], enabled=False)])
    assert catalog.upstreams == {}
    monkeypatch.delenv("TEST_OPENAI_KEY")
    assert catalog_build(price_rows=[price("gpt-4o")], provider_rows=[]).upstreams == {}


def test_the_mock_toggle_serves_every_priced_model_in_its_providers_wire_format(settings):
    settings.FINOPS = {**settings.FINOPS, "MOCK_LLM_URL": "http://127.0.0.1:9/v1"}
    catalog = catalog_build(
        price_rows=[price("gpt-4o"), price("claude-x", provider="anthropic"), price("gemini-x", provider="google"),
                    price("azure-x", provider="azure")],
        provider_rows=[provider_row("vllm", ["x"])],
    )  # fmt: skip
    served = {m: catalog.upstream_for(m) for m in ("gpt-4o", "claude-x", "gemini-x", "azure-x")}
    assert {m: (u.name, u.kind, u.base_url, u.mock) for m, u in served.items()} == {
        "gpt-4o": ("mock", "openai", "http://127.0.0.1:9/v1", True),
        "claude-x": ("mock-anthropic", "anthropic", "http://127.0.0.1:9/v1", True),
        "gemini-x": ("mock-gemini", "gemini", "http://127.0.0.1:9/v1beta", True),
        "azure-x": ("mock-azure", "azure", "http://127.0.0.1:9", True),
    }
    assert catalog.upstream_for("x") is None


def test_an_admin_row_brings_its_kind_and_options(no_mock):
    row = {**provider_row("azure-prod", ["gpt-4o"]), "kind": "azure",
           "options": '{"api_version": "2024-10-21", "deployments": {"gpt-4o": "prod-4o"}}'}  # fmt: skip
    upstream = catalog_build(price_rows=[price("gpt-4o")], provider_rows=[row]).upstream_for("gpt-4o")
    assert (upstream.kind, upstream.options["deployments"], upstream.mock) == ("azure", {"gpt-4o": "prod-4o"}, False)
    plain = catalog_build(price_rows=[price("gpt-4o")], provider_rows=[provider_row("vllm", ["gpt-4o"])])
    assert plain.upstream_for("gpt-4o").kind == "openai"  # rows read before the kind column existed


def test_the_price_in_force_follows_the_dates(no_mock):
    rows = [
        price("gpt-4o", pk=1, effective_from=dt.date(2025, 1, 1), effective_to=dt.date(2026, 3, 1)),
        price("gpt-4o", pk=2, effective_from=dt.date(2026, 3, 1)),
    ]
    catalog = catalog_build(price_rows=rows, provider_rows=[])
    assert catalog.price_for("gpt-4o", dt.date(2026, 2, 28)).id == 1
    assert catalog.price_for("gpt-4o", TODAY).id == 2
    assert catalog.price_for("gpt-4o", dt.date(2024, 12, 31)) is None


def test_router_names_are_known_without_a_price(no_mock):
    catalog = catalog_build(price_rows=[], provider_rows=[])
    assert catalog.is_known("auto") and catalog.is_known("finops/premium")
    assert not catalog.is_known("gpt-4o")


@pytest.mark.django_db
def test_a_provider_stores_the_name_of_the_key_variable_never_the_key():
    provider = Provider(
        name="openai-eu", base_url="https://eu.example/v1", api_key_env="sk-live-abc123", served_models=["gpt-4o"]
    )
    with pytest.raises(ValidationError) as caught:
        provider.full_clean()
    assert "api_key_env" in caught.value.message_dict
    provider.api_key_env = "FINOPS_UPSTREAM_OPENAI_EU_KEY"  # the allowlist's pattern (apps.gateway.upstream_policy)
    provider.served_models = "gpt-4o"
    with pytest.raises(ValidationError):
        provider.full_clean()
    provider.served_models = ["gpt-4o"]
    provider.full_clean()


@pytest.mark.django_db
def test_the_provider_admin_lists_and_adds(admin_client):
    Provider.objects.create(name="local", base_url="http://localhost:11434/v1", served_models=["*"])
    listing = admin_client.get("/admin/gateway/provider/")
    assert listing.status_code == 200
    assert b"all priced" in listing.content
    assert admin_client.get("/admin/gateway/provider/add/").status_code == 200
    response = admin_client.post(
        "/admin/gateway/provider/",
        {"action": "disable", "_selected_action": [Provider.objects.get().pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert Provider.objects.get().enabled is False
