"""compose.yml, checked statically (no Docker engine runs here): it parses, every variable it hands the finops
services is one the code reads, ports and volumes are consistent, and Prometheus gets its config and rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yml"
FINOPS_SERVICES = {"migrate", "api", "worker", "beat", "mock-llm"}  # built from the Dockerfile
# Read by a third-party process the image runs, not by our code: uvicorn's default for --workers.
THIRD_PARTY_ENV = {"WEB_CONCURRENCY": "uvicorn"}
_ENV_READ = re.compile(
    r"""(?:env_(?:str|bool|int|float|decimal)\(\s*|os\.environ\.get\(\s*|os\.environ\[\s*|os\.getenv\(\s*|"""
    r"""os\.environ\.setdefault\(\s*|"api_key_env":\s*)["']([A-Z][A-Z0-9_]*)["']"""
)
_INTERPOLATION = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::?[-?][^}]*)?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def env_names_read_by_the_code() -> set[str]:
    from finops.conf import env_names

    names: set[str] = set(env_names())  # FINOPS_<FIELD> of every FinopsConf field (finops/conf.py)
    for folder in ("finops", "apps"):
        for path in (ROOT / folder).rglob("*.py"):
            if "tests" in path.parts or "migrations" in path.parts:
                continue
            names.update(_ENV_READ.findall(path.read_text()))
    return names


def test_it_parses_and_has_the_stack(compose):
    assert {"postgres", "redis", "prometheus", "alertmanager", "api", "worker", "beat", "migrate"} <= set(compose["services"])
    assert compose["services"]["postgres"]["image"].startswith("pgvector/pgvector:pg16")
    assert compose["services"]["redis"]["image"].startswith("redis:7")


def test_the_env_scan_finds_what_settings_read():
    names = env_names_read_by_the_code()
    assert {
        "DATABASE_URL",
        "REDIS_URL",
        "SECRET_KEY",
        "FINOPS_BUDGET_TIMEOUT_MS",
        "PROMETHEUS_MULTIPROC_DIR",
        "OPENAI_API_KEY",
    } <= names
    assert "NOT_A_SETTING" not in names


def test_every_finops_service_gets_only_variables_the_code_reads(compose):
    read = env_names_read_by_the_code() | set(THIRD_PARTY_ENV)
    for name in FINOPS_SERVICES & set(compose["services"]):
        env = compose["services"][name].get("environment") or {}
        assert isinstance(env, dict), f"{name}: use the mapping form so keys can be checked"
        unknown = set(env) - read
        assert not unknown, f"{name} sets {sorted(unknown)}, which nothing reads"


def test_the_finops_services_are_configured_for_production(compose):
    for name in ("api", "worker", "beat", "migrate"):
        env = compose["services"][name]["environment"]
        assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"} <= set(env), name
        assert env["DEBUG"] == "0", name
        assert "@postgres:5432/" in env["DATABASE_URL"] and env["REDIS_URL"].startswith("redis://redis:6379/"), name
        assert env["SECRET_KEY"].startswith("${SECRET_KEY:?"), f"{name}: SECRET_KEY must be required, never defaulted"


def test_every_interpolated_variable_is_in_env_example(compose):
    used = set(_INTERPOLATION.findall(COMPOSE.read_text()))
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    missing = used - example - {"LOG_LEVEL", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE"}  # defaulted, documented in settings
    assert not missing, f".env.example lacks {sorted(missing)}"
    assert example <= used | env_names_read_by_the_code(), f".env.example lists unused {sorted(example - used)}"


def test_published_ports_are_unique_and_match_what_listens(compose):
    listening = {"api": 8000, "prometheus": 9090, "alertmanager": 9093, "grafana": 3000}
    published: dict[str, str] = {}
    for name, service in compose["services"].items():
        for mapping in service.get("ports", []):
            host, container = str(mapping).rsplit(":", 1)
            assert name in listening and int(container) == listening[name], f"{name}: {mapping}"
            assert host not in published, f"{name} and {published.get(host)} publish {host}"
            published[host] = name
    assert set(published.values()) == set(listening)
    assert "--port" in compose["services"]["mock-llm"]["command"] and "8001" in compose["services"]["mock-llm"]["command"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert '"--port", "8000"' in dockerfile and "EXPOSE 8000" in dockerfile


def test_named_volumes_are_declared_and_bind_mounts_exist(compose):
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist in the repository"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert declared == used, f"declared but unused: {sorted(declared - used)}"


def test_the_spool_volume_is_where_the_ledger_spools(compose):
    for name in ("api", "worker"):
        assert "spool:/app/.finops/spool" in compose["services"][name]["volumes"], name
    assert 'str(BASE_DIR / ".finops" / "spool")' in (ROOT / "finops" / "conf.py").read_text()  # the default, once
    assert "WORKDIR /app" in (ROOT / "Dockerfile").read_text()


def test_prometheus_mounts_its_config_and_every_rule_file(compose):
    mounts = dict(v.split(":", 1) for v in compose["services"]["prometheus"]["volumes"])
    config_source = next(src for src, dst in mounts.items() if dst.startswith("/etc/prometheus/prometheus.yml"))
    rules_source = next(src for src, dst in mounts.items() if dst.startswith("/etc/prometheus/rules"))
    assert "--config.file=/etc/prometheus/prometheus.yml" in compose["services"]["prometheus"]["command"]
    config = yaml.safe_load((ROOT / config_source).read_text())
    assert config["rule_files"] == ["rules/*.yml"]  # relative to /etc/prometheus, where the rules folder is mounted
    rule_files = sorted((ROOT / rules_source).glob("*.yml"))
    assert {p.name for p in rule_files} >= {"finops.yml", "slo.yml"}
    for path in rule_files:
        assert yaml.safe_load(path.read_text())["groups"], path
    targets = {job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]] for job in config["scrape_configs"]}
    assert targets == {"finops-api": ["api:8000"], "finops-worker": ["worker:9808"]}
    assert all(job["metrics_path"] == "/metrics" for job in config["scrape_configs"])
    # The job-freshness gauge has a `job` label of its own that the rules select on.
    assert config["scrape_configs"][0]["honor_labels"] is True
    worker = compose["services"]["worker"]
    assert worker["environment"]["FINOPS_WORKER_METRICS_PORT"] == "9808" and "9808" in worker["expose"]
    alertmanagers = [t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    assert alertmanagers == ["alertmanager:9093"]
    am_mounts = dict(v.split(":", 1) for v in compose["services"]["alertmanager"]["volumes"])
    assert all((ROOT / src).is_file() for src in am_mounts)


def test_services_start_in_order(compose):
    services = compose["services"]
    for name in ("api", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert "healthcheck" in services["postgres"] and "healthcheck" in services["redis"]
    assert services["migrate"]["command"][-2:] == ["migrate", "--noinput"]


def test_the_image_leaves_out_local_state():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".finops", ".git"} <= set(ignored)


def test_prometheus_scrapes_the_api_with_the_metrics_token(compose):
    """/metrics needs FINOPS_METRICS_TOKEN (finops/views.py): compose requires it, hands the same value to
    Prometheus as a secret, and the scrape job reads that secret's file."""
    assert compose["services"]["api"]["environment"]["FINOPS_METRICS_TOKEN"].startswith("${FINOPS_METRICS_TOKEN:?")
    assert compose["secrets"]["finops_metrics_token"] == {"environment": "FINOPS_METRICS_TOKEN"}
    assert "finops_metrics_token" in compose["services"]["prometheus"]["secrets"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    api = next(job for job in config["scrape_configs"] if job["job_name"] == "finops-api")
    assert api["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/finops_metrics_token"}
