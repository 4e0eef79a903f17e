"""Settings, checks, /metrics and the embedded services' env file."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.core.checks import run_checks
from django.test import override_settings

from conftest import ROOT, free_port, wait_for_port
from finops.envfile import read_env_file


def test_metrics_are_served_in_prometheus_format(client, db):
    from django.utils import timezone

    from finops.models import JobRun

    JobRun.objects.create(name="cost_rollup_hourly", last_success_at=timezone.now(), successes=1)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    assert 'finops_job_last_success_timestamp_seconds{job="cost_rollup_hourly"}' in body


def test_metrics_merge_several_worker_processes(tmp_path, db):
    """With PROMETHEUS_MULTIPROC_DIR, counters from other processes show up in one scrape."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    code = (
        "from prometheus_client import Counter; c = Counter('finops_selftest_total', 'x', ['outcome']);"
        "c.labels(outcome='ok').inc(3)"
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
    scrape = subprocess.run(
        [sys.executable, "-c", "from prometheus_client import CollectorRegistry, generate_latest, multiprocess;"
         "r = CollectorRegistry(); multiprocess.MultiProcessCollector(r); print(generate_latest(r).decode())"],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert 'finops_selftest_total{outcome="ok"} 6.0' in scrape.stdout


def test_time_zone_must_be_utc():
    with override_settings(TIME_ZONE="Europe/Paris"):
        assert any(e.id == "finops.E001" for e in run_checks())
    assert not any(e.id == "finops.E001" for e in run_checks())


def test_production_refuses_the_default_secret_key():
    with override_settings(DEBUG=False, SECRET_KEY="django-insecure-finops-development-only"):
        assert any(e.id == "finops.E002" for e in run_checks(include_deployment_checks=True))
    with override_settings(DEBUG=False, SECRET_KEY="x" * 60):
        assert any(e.id == "finops.E002" for e in run_checks(include_deployment_checks=True))
    with override_settings(DEBUG=False, SECRET_KEY="k3J9-qv8ZpL2mX7wR4tY6uI0oP1aS5dF8gH3jK9lZ2xC7vB4nM6"):
        assert not any(e.id == "finops.E002" for e in run_checks(include_deployment_checks=True))


def test_an_unknown_local_embedding_runtime_is_a_startup_error(settings):
    settings.FINOPS = {**settings.FINOPS, "CACHE_LOCAL_RUNTIME": "onxx"}
    assert any(e.id == "finops.E003" for e in run_checks())
    settings.FINOPS = {**settings.FINOPS, "CACHE_LOCAL_RUNTIME": "torch"}
    assert not any(e.id == "finops.E003" for e in run_checks())


def test_make_services_wrote_the_env_file():
    values = read_env_file()
    assert values["DATABASE_URL"].startswith("postgresql://")
    assert values["REDIS_URL"].startswith("redis://")


def test_services_start_is_idempotent():
    before = read_env_file()
    # As `make services` runs from a shell: only URLs of external servers come from the environment.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    if before.get("FINOPS_EMBEDDED_PG") == "0":
        env["DATABASE_URL"] = before["DATABASE_URL"]
    if before.get("FINOPS_EMBEDDED_REDIS") == "0":
        env["REDIS_URL"] = before["REDIS_URL"]
    subprocess.run([sys.executable, "-m", "finops.services", "start"], cwd=ROOT, env=env, check=True, capture_output=True)
    assert read_env_file() == before


def test_the_admin_login_page_is_served(client, db):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert b"Django administration" in response.content or b"finops" in response.content


def test_the_asgi_server_serves_the_admin_with_its_static_files(gateway_url):
    """Under uvicorn (as `make run` and compose run it), the admin login page and its CSS are served."""
    import urllib.request

    base = gateway_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{base}/admin/login/", timeout=10) as page:
        assert page.status == 200
        html = page.read().decode()
    assert "/static/admin/css/base.css" in html
    with urllib.request.urlopen(f"{base}/static/admin/css/base.css", timeout=10) as css:
        assert css.status == 200
        assert css.headers["Content-Type"].startswith("text/css")


def test_redis_runs_on_the_real_clock_when_the_stack_is_moved_with_libfaketime(monkeypatch):
    """`faketime '2027-03-01 00:30:00' make test` (docs/reliability.md, "Dates"): redis-server cannot start under
    libfaketime (it recurses in clock_gettime), so the services start it without the preload, keeping other ones."""
    from finops.services import real_clock_env, redis_spawn

    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1:/opt/other.so")
    assert real_clock_env()["LD_PRELOAD"] == "/opt/other.so"
    libfaketime = next(iter(Path("/usr/lib").glob("*/faketime/libfaketime.so.1")), None)
    if libfaketime is None:
        pytest.skip("libfaketime is not installed (make tools installs the faketime package)")
    monkeypatch.setenv("LD_PRELOAD", str(libfaketime))
    monkeypatch.setenv("FAKETIME", "@2027-03-01 00:30:00")
    assert "LD_PRELOAD" not in real_clock_env()
    port = free_port()
    proc = redis_spawn(port)
    try:
        wait_for_port(port, timeout=10, proc=proc)
        assert redis.Redis(port=port, socket_timeout=5).ping()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
