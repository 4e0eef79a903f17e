"""finops.conf: one typed settings object, its defaults defined once, and test overrides seen at once."""

from __future__ import annotations

from decimal import Decimal

from finops.conf import FinopsConf, conf, finops_from_env


def test_without_environment_every_knob_is_its_default():
    assert FinopsConf.from_mapping(finops_from_env({})) == FinopsConf()


def test_environment_variables_are_parsed_by_the_field_type():
    values = finops_from_env(
        {
            "FINOPS_BUDGET_TIMEOUT_MS": "75",
            "FINOPS_CACHE_THRESHOLD": "0.9",
            "FINOPS_ANOMALY_WARNING_USD": "12.5",
            "FINOPS_LEDGER_INTENTS": "off",
            "FINOPS_GATEWAY_ROUTER_MODELS": "auto,,smart/*",
            "FINOPS_UPSTREAMS": '[{"name": "local", "base_url": "http://127.0.0.1:9/v1", "models": ["*"]}]',
            "FINOPS_CACHE_LOCAL_RUNTIME": "",  # empty: the default
        }
    )
    typed = FinopsConf.from_mapping(values)
    assert typed.budget_timeout_ms == 75
    assert typed.cache_threshold == 0.9
    assert typed.anomaly_warning_usd == Decimal("12.5")
    assert typed.ledger_intents is False
    assert typed.gateway_router_models == ["auto", "smart/*"]
    assert typed.upstreams[0]["name"] == "local"
    assert typed.cache_local_runtime == "onnx-int8"


def test_a_settings_override_is_seen_and_undone(settings):
    before = conf()
    settings.FINOPS = {**settings.FINOPS, "BUDGET_TIMEOUT_MS": 7, "ANOMALY_CRITICAL_USD": 3}
    assert conf().budget_timeout_ms == 7
    assert conf().anomaly_critical_usd == Decimal("3")
    assert conf() is conf()  # built once per FINOPS value
    settings.FINOPS = {**settings.FINOPS, "BUDGET_TIMEOUT_MS": before.budget_timeout_ms}
    assert conf().budget_timeout_ms == before.budget_timeout_ms


def test_the_local_embedding_runtime_has_one_default():
    assert FinopsConf().cache_local_runtime == "onnx-int8"
