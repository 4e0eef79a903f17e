"""Security: keys hashed and compared in constant time, prompts stored only on opt-in, no secret in logs or
error bodies, production settings refuse a weak SECRET_KEY and pass `check --deploy`.

Tenant isolation on every surface lives in finops/tests/test_isolation.py; per-key rate limits and request
size limits in apps/gateway/tests/test_limits.py; the key cache during a Postgres outage in
apps/gateway/tests/test_key_cache_outage.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import os
import secrets
import subprocess
import sys
import time
import uuid

import pytest
import requests
from django.core.management import call_command
from django.db import connection

from conftest import ROOT, child_process_env, free_port, stop_process, wait_for_port


def _text_columns() -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.table_name, c.column_name FROM information_schema.columns c
            JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
            WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
              AND c.data_type IN ('text', 'character varying', 'jsonb', 'json', 'character')
            """
        )
        return cursor.fetchall()


def _columns_containing(needle: str) -> list[tuple[str, str]]:
    found = []
    with connection.cursor() as cursor:
        for table, column in _text_columns():
            cursor.execute(f'SELECT 1 FROM "{table}" WHERE "{column}"::text LIKE %s LIMIT 1', [f"%{needle}%"])
            if cursor.fetchone():
                found.append((table, column))
    return found


@pytest.mark.django_db
def test_api_keys_created_by_the_command_are_stored_only_as_a_hash():
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", org="SecOrg", team="SecTeam", user="sec-user", stdout=out, stderr=err)
    secret = out.getvalue().strip()
    assert secret.startswith("fo-") and len(secret) > 30

    from apps.tenancy.models import ApiKey

    key = ApiKey.objects.get(org__name="SecOrg")
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.startswith(key.prefix) and len(key.prefix) <= 10
    # Neither the secret nor its random part (beyond the displayed prefix) is in any column of any table.
    assert _columns_containing(secret) == []
    assert _columns_containing(secret[len(key.prefix) :]) == []
    assert secret not in err.getvalue()


@pytest.mark.django_db
def test_key_lookup_compares_hashes_with_compare_digest(make_tenant, monkeypatch):
    from apps.tenancy.selectors import api_key_for_secret
    from apps.tenancy.services import api_key_revoke

    tenant = make_tenant()
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert api_key_for_secret(secret=tenant.secret).pk == tenant.api_key.pk
    assert calls == [(tenant.api_key.key_hash, hashlib.sha256(tenant.secret.encode()).hexdigest())]
    # A secret one character off, and a revoked key, are refused.
    assert api_key_for_secret(secret=tenant.secret[:-1] + ("A" if tenant.secret[-1] != "A" else "B")) is None
    api_key_revoke(api_key=tenant.api_key)
    assert api_key_for_secret(secret=tenant.secret) is None


@pytest.mark.django_db(transaction=True)  # the gateway reads keys over its own asyncpg connection
def test_the_gateway_fast_path_compares_with_compare_digest_too(make_tenant, monkeypatch):
    """The lean ASGI path looks keys up over asyncpg, outside the ORM: by the SHA-256 (a unique index, so the
    database compares digests, never secrets), and its final check is hmac.compare_digest as well."""
    import asyncio

    from apps.tenancy import keys as selectors
    from finops.asyncdb import close_pools

    tenant = make_tenant()
    digest = hashlib.sha256(tenant.secret.encode()).hexdigest()
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))

    async def lookups():
        try:
            return [await selectors.caller_for_secret(s) for s in (tenant.secret, tenant.secret[:-1] + "#")]
        finally:
            await close_pools()

    selectors.caller_cache_clear()
    try:
        (caller, revoked), (nobody, _) = asyncio.run(lookups())
    finally:
        selectors.caller_cache_clear()
    assert (caller.api_key_id, revoked, nobody) == (tenant.api_key.id, False, None)
    assert calls == [(digest, digest)]  # the wrong secret matched no row: nothing to compare


@contextlib.contextmanager
def logged_gateway(mock_llm_url: str, log_path):
    """The gateway under uvicorn, like conftest's gateway_server, but with its output in a file we can read."""
    port = free_port()
    env = child_process_env(
        FINOPS_MOCK_LLM_URL=mock_llm_url,
        FINOPS_API_KEY_CACHE_SECONDS="0",
        FINOPS_GATEWAY_CATALOG_CACHE_SECONDS="0",
        FINOPS_ROUTER_CONFIG_TTL_S="0",
        LOG_LEVEL="DEBUG",  # the most talkative setting: still no secrets
    )
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "finops.asgi:application", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for_port(port, timeout=60, proc=proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process(proc)


@pytest.mark.django_db(transaction=True)
def test_revoked_and_invalid_keys_never_echo_the_secret(make_tenant, prices, mock_llm_url, tmp_path):
    from apps.tenancy.services import api_key_revoke

    revoked = make_tenant(org="Revoked", team="T", user="gone")
    api_key_revoke(api_key=revoked.api_key)
    invalid = "fo-" + secrets.token_urlsafe(32)
    log_path = tmp_path / "gateway.log"
    bodies = []
    with logged_gateway(mock_llm_url, log_path) as url:
        for secret in (revoked.secret, invalid):
            for method, path, kwargs in (
                (
                    "POST",
                    "/v1/chat/completions",
                    {"json": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}},
                ),
                ("POST", "/chat", {"json": {"model": "gpt-4o-mini", "prompt": "hi"}}),
                ("GET", "/api/spend/", {}),
                ("GET", "/v1/models", {}),
            ):
                response = requests.request(
                    method, url + path, headers={"Authorization": f"Bearer {secret}"}, timeout=15, **kwargs
                )
                assert response.status_code == 401, (path, response.status_code, response.text[:200])
                bodies.append((secret, response.text + "\n".join(f"{k}: {v}" for k, v in response.headers.items())))
        # A key in the wrong header shape, too.
        response = requests.post(url + "/v1/chat/completions", headers={"Authorization": invalid}, json={}, timeout=15)
        assert response.status_code == 401
        bodies.append((invalid, response.text))
        time.sleep(0.5)  # let the last log lines reach the file
    log = log_path.read_text(errors="replace")
    assert "Application startup complete" in log  # the capture works
    for secret, body in bodies:
        assert secret not in body
        assert secret[10:] not in body
    for secret in (revoked.secret, invalid):
        assert secret[10:] not in log


def _chat(url: str, secret: str, prompt: str) -> str:
    response = requests.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


def _row(request_id: str):
    from apps.ledger.models import LLMRequest

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = LLMRequest.objects.filter(request_id=request_id).first()
        if row is not None:
            return row
        time.sleep(0.05)
    raise AssertionError(f"no ledger row for {request_id}")


@pytest.mark.django_db(transaction=True)
def test_prompt_text_is_stored_only_when_the_org_opts_in(gateway_url, make_tenant, prices, redis_client):
    private = make_tenant(org="Private", team="T", user="p")
    opted_in = make_tenant(org="Open", team="T", user="o")
    opted_in.org.store_prompts = True
    opted_in.org.save(update_fields=["store_prompts"])
    assert private.org.store_prompts is False

    secret_prompt = f"my confidential plan {uuid.uuid4().hex}"
    row = _row(_chat(gateway_url, private.secret, secret_prompt))
    assert row.status == "served" and row.org_id == private.org.id
    assert row.prompt_text is None and row.response_text is None
    assert row.prompt_hash and secret_prompt not in row.prompt_hash
    assert row.prompt_tokens > 0
    assert _columns_containing(secret_prompt) == []  # not in the cache tables either

    shared_prompt = f"a shareable question {uuid.uuid4().hex}"
    row = _row(_chat(gateway_url, opted_in.secret, shared_prompt))
    assert row.org_id == opted_in.org.id
    assert shared_prompt in row.prompt_text
    assert row.response_text


def _check_deploy(**env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SECURE_") and k not in ("SECRET_KEY", "DEBUG")}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT, env={**base, "DJANGO_SETTINGS_MODULE": "finops.settings", **env},
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


# The documented production environment (docs/reliability.md, "Production settings").
PRODUCTION_ENV = {
    "DEBUG": "0",
    "ALLOWED_HOSTS": "finops.example.com",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
}


@pytest.mark.parametrize("secret_key", [None, "django-insecure-whatever-" + "x" * 40, "ab" * 40, "short-but-random-Q9z"])
def test_production_refuses_a_default_or_weak_secret_key(secret_key):
    env = dict(PRODUCTION_ENV) | ({} if secret_key is None else {"SECRET_KEY": secret_key})
    result = _check_deploy(**env)
    assert result.returncode != 0
    assert "finops.E002" in result.stderr + result.stdout


def test_production_settings_pass_check_deploy():
    result = _check_deploy(**PRODUCTION_ENV, SECRET_KEY=secrets.token_urlsafe(60))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "ERRORS:" not in output and "CRITICALS:" not in output
    assert "security.W" not in output and "finops." not in output, output


@pytest.mark.django_db(transaction=True)
def test_a_nul_byte_from_a_client_is_recorded_and_cannot_divert_the_ledger(gateway_url, make_tenant, prices, redis_client):
    """Postgres text cannot hold NUL. A client's "\\u0000" once failed the ledger insert of its whole batch, and the
    writer then sent every row to the outbox for FINOPS_LEDGER_DB_RETRY_AFTER_S: one request could hide the next ones."""
    tenant = make_tenant(org="Nul", team="T", user="n")
    tenant.org.store_prompts = True
    tenant.org.save(update_fields=["store_prompts"])
    headers = {"Authorization": f"Bearer {tenant.secret}"}

    def post(model: str, content: str) -> requests.Response:
        body = {"model": model, "messages": [{"role": "user", "content": content}]}
        return requests.post(f"{gateway_url}/v1/chat/completions", json=body, headers=headers, timeout=30)

    odd_model = post("gpt-4o-mini\u0000", "hi")
    assert odd_model.status_code == 404
    assert _row(odd_model.headers["x-request-id"]).requested_model == "gpt-4o-mini\ufffd"
    odd_prompt = post("gpt-4o-mini", f"a nul \u0000 inside {uuid.uuid4().hex}")
    assert odd_prompt.status_code == 200
    assert "a nul \ufffd inside" in _row(odd_prompt.headers["x-request-id"]).prompt_text
    assert _row(_chat(gateway_url, tenant.secret, f"plain {uuid.uuid4().hex}")).status == "served"
