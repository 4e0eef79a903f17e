"""End-to-end tests of the mock LLM upstream through the real ``openai`` SDK.

The server runs in a subprocess (``python -m demo.mock_llm``) exactly as
developers and CI use it.  Nothing here touches Django or the database.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from demo.mock_llm import FaultStore
from evals.router.datasets import load_eval50
from finops.processes import free_port, stop_process
from finops.tokens import count_message_tokens, count_tokens, token_pieces, truncate_tokens

REPO_ROOT = Path(__file__).resolve().parents[2]
EVAL50 = REPO_ROOT / "fixtures" / "routellm" / "eval50.jsonl"

CONFIG_FAULTS = {"flaky-model": {"error": "500", "rate": 0.5}}
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France? Answer in one word."},
]


def _http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _start_server(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo.mock_llm", "--port", str(port), *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"mock server exited early:\n{out}")
        try:
            if _http("GET", f"{base}/health")[0] == 200:
                return proc, base
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("mock server did not become healthy in 20 s")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    proc, base = _start_server("--replay", str(EVAL50), "--faults", json.dumps(CONFIG_FAULTS))
    try:
        yield base
    finally:
        stop_process(proc, timeout=10)


@pytest.fixture(autouse=True)
def _reset_runtime_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "server" in request.fixturenames:
        base = request.getfixturevalue("server")
        # Restore the configured faults so tests stay independent of their order.
        _http("DELETE", f"{base}/_mock/faults")
        _http("POST", f"{base}/_mock/faults", CONFIG_FAULTS)


@pytest.fixture()
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0, timeout=10)


# --------------------------------------------------------------------------- basics


def test_health_and_models(server: str) -> None:
    status, _, body = _http("GET", f"{server}/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0)
    ids = {m.id for m in client.models.list()}
    assert {"gpt-4-1106-preview", "mixtral-8x7b-instruct", "flaky-model"} <= ids


def test_non_stream_completion_and_usage(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    choice = resp.choices[0]
    assert resp.object == "chat.completion"
    assert resp.model == "gpt-4o-mini"
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content.startswith("Mock answer from gpt-4o-mini: ")
    assert resp.usage.prompt_tokens == count_message_tokens(MESSAGES)
    assert resp.usage.completion_tokens == count_tokens(choice.message.content)
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.usage.prompt_tokens_details.cached_tokens == 0


def test_answers_are_deterministic(client: openai.OpenAI) -> None:
    a = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices[0].message.content
    b = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices[0].message.content
    other_model = client.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices[0].message.content
    other_prompt = (
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Something else entirely"}])
        .choices[0]
        .message.content
    )
    assert a == b
    assert a != other_model
    assert a != other_prompt


def test_stream_with_include_usage_matches_non_stream(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == full.choices[0].message.content
    # OpenAI contract: finish_reason on the last choice chunk, then a usage-only chunk.
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == full.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_usage_and_raw_sse_framing(server: str, client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"

    status, headers, raw = _http(
        "POST", f"{server}/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = raw.decode().split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events[:-1])


def test_async_client(server: str) -> None:
    async def run() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="x", max_retries=0)
        resp = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        await client.close()
        return resp.choices[0].message.content, "".join(parts)

    non_stream, streamed = asyncio.run(run())
    assert non_stream == streamed


# --------------------------------------------------------------------------- usage knobs


def test_cached_tokens_from_header_and_metadata(client: openai.OpenAI) -> None:
    prompt_tokens = count_message_tokens(MESSAGES)
    resp = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Mock-Cached-Tokens": "7"})
    assert resp.usage.prompt_tokens_details.cached_tokens == 7
    resp = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, metadata={"mock_cached_tokens": "10000"})
    assert resp.usage.prompt_tokens_details.cached_tokens == prompt_tokens  # clamped


def test_max_tokens_truncates_with_finish_reason_length(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices[0].message.content
    resp = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=4)
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 4
    assert resp.choices[0].message.content == truncate_tokens(full, 4)

    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_completion_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 4

    roomy = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=10_000)
    assert roomy.choices[0].finish_reason == "stop"


def test_logprobs(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, logprobs=True)
    entries = resp.choices[0].logprobs.content
    assert len(entries) == resp.usage.completion_tokens
    assert "".join(e.token for e in entries) == resp.choices[0].message.content
    assert all(e.logprob <= 0 and e.bytes is None and e.top_logprobs == [] for e in entries)
    again = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, logprobs=True)
    assert [e.logprob for e in again.choices[0].logprobs.content] == [e.logprob for e in entries]

    forced = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, logprobs=True, extra_headers={"X-Mock-Logprob": "-2.5"}
    )
    values = [e.logprob for e in forced.choices[0].logprobs.content]
    assert sum(values) / len(values) == pytest.approx(-2.5, abs=1e-3)

    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, logprobs=True, stream=True)
    streamed = [c.choices[0].logprobs.content[0].logprob for c in stream if c.choices and c.choices[0].logprobs]
    assert streamed == [e.logprob for e in entries]


def test_embeddings(client: openai.OpenAI, server: str) -> None:
    resp = client.embeddings.create(model="text-embedding-3-small", input=["hello world", "hello there world"])
    assert [d.index for d in resp.data] == [0, 1]
    a, b = (d.embedding for d in resp.data)
    assert len(a) == 384
    assert math.isclose(math.fsum(x * x for x in a), 1.0, rel_tol=1e-6)  # SDK may use float32 base64
    assert resp.usage.prompt_tokens == count_tokens("hello world") + count_tokens("hello there world")
    # Shared words -> positive similarity; identical text -> identical vector.
    assert sum(x * y for x, y in zip(a, b, strict=True)) > 0.3
    assert client.embeddings.create(model="text-embedding-3-small", input="hello world").data[0].embedding == a

    small = client.embeddings.create(model="text-embedding-3-small", input="hello", dimensions=64)
    assert len(small.data[0].embedding) == 64

    status, _, raw = _http(
        "POST",
        f"{server}/v1/embeddings",
        {"model": "text-embedding-3-small", "input": "hello world", "encoding_format": "base64"},
    )
    assert status == 200
    decoded = struct.unpack("<384f", base64.b64decode(json.loads(raw)["data"][0]["embedding"]))
    assert decoded == pytest.approx(a, abs=1e-6)


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("code", "exc_class"),
    [
        ("429", openai.RateLimitError),
        ("500", openai.InternalServerError),
        ("503", openai.InternalServerError),
        ("400", openai.BadRequestError),
    ],
)
def test_header_errors_raise_sdk_exceptions(client: openai.OpenAI, code: str, exc_class: type[Exception]) -> None:
    with pytest.raises(exc_class) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Mock-Error": code})
    assert info.value.status_code == int(code)  # type: ignore[attr-defined]
    assert set(info.value.body) >= {"message", "type", "code"}  # type: ignore[attr-defined]


def test_timeout_fault_raises_api_timeout_error(server: str, client: openai.OpenAI) -> None:
    impatient = client.with_options(timeout=0.5)
    start = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Mock-Error": "timeout"})
    assert time.monotonic() - start < 5
    # The abandoned sleep must not block the server.
    start = time.monotonic()
    assert _http("GET", f"{server}/health")[0] == 200
    assert time.monotonic() - start < 1


def test_malformed_fault_breaks_json_parsing(client: openai.OpenAI) -> None:
    with pytest.raises(json.JSONDecodeError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Mock-Error": "malformed"})
    with pytest.raises(json.JSONDecodeError):
        list(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers={"X-Mock-Error": "malformed"}
            )
        )


def test_truncate_fault(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"X-Mock-Truncate": "1"},
        )
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert 0 < len(content) < len(full) and full.startswith(content)
    assert all(c.choices and c.choices[0].finish_reason is None for c in chunks)
    assert all(c.usage is None for c in chunks)

    resp = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Mock-Truncate": "1"})
    assert resp.choices[0].finish_reason == "length"
    assert full.startswith(resp.choices[0].message.content)


def test_latency_header(client: openai.OpenAI) -> None:
    start = time.monotonic()
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Mock-Latency-Ms": "150"})
    assert time.monotonic() - start >= 0.15


def test_configured_fault_rate_is_deterministic(client: openai.OpenAI) -> None:
    outcomes = []
    for _ in range(6):
        try:
            client.chat.completions.create(model="flaky-model", messages=MESSAGES)
            outcomes.append("ok")
        except openai.InternalServerError:
            outcomes.append("500")
    # rate 0.5 fails every second request, counting from the last fault reset.
    assert outcomes == ["ok", "500"] * 3


def test_runtime_fault_api(server: str, client: openai.OpenAI) -> None:
    status, _, body = _http("POST", f"{server}/_mock/faults", {"chaos-model": {"error": "429", "retry_after": 0.25}})
    assert status == 200 and json.loads(body)["chaos-model"]["error"] == "429"
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="chaos-model", messages=MESSAGES)
    assert info.value.response.headers["retry-after-ms"] == "250"
    # Other models are unaffected.
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    _http("POST", f"{server}/_mock/faults", {"*": {"error": "503"}})
    with pytest.raises(openai.InternalServerError):
        client.embeddings.create(model="text-embedding-3-small", input="hi")

    assert _http("POST", f"{server}/_mock/faults", {"bad": {"error": "teapot"}})[0] == 400

    status, _, body = _http("DELETE", f"{server}/_mock/faults")
    assert status == 200 and json.loads(body) == {}
    client.chat.completions.create(model="chaos-model", messages=MESSAGES)
    client.chat.completions.create(model="flaky-model", messages=MESSAGES)  # configured fault cleared too


def test_stats_count_upstream_calls(server: str, client: openai.OpenAI) -> None:
    _http("DELETE", f"{server}/_mock/stats")
    for _ in range(3):
        client.chat.completions.create(model="stats-model", messages=MESSAGES)
    stats = json.loads(_http("GET", f"{server}/_mock/stats")[2])
    assert stats["chat"] == {"stats-model": 3}


# --------------------------------------------------------------------------- replay


def test_replay_returns_recorded_answers_per_tier(server: str, client: openai.OpenAI) -> None:
    records = load_eval50()
    rec = next(r for r in records if not r["weak_correct"] and r["strong_correct"])
    # Extra whitespace must not defeat the match; a system prompt must not either.
    messages = [
        {"role": "system", "content": "Solve the problem."},
        {"role": "user", "content": "  " + rec["prompt"].replace(" ", "  ") + "\n"},
    ]

    weak = client.chat.completions.with_raw_response.create(model="mixtral-8x7b-instruct", messages=messages)
    assert weak.headers["x-mock-replay"] == "hit"
    weak_resp = weak.parse()
    assert weak_resp.choices[0].message.content == rec["weak_response"]
    assert weak_resp.usage.completion_tokens == count_tokens(rec["weak_response"])

    strong = client.chat.completions.create(model="gpt-4-1106-preview", messages=messages)
    assert strong.choices[0].message.content == rec["strong_response"]
    assert rec["weak_response"] != rec["strong_response"]

    # Substring rules: any "*mixtral*" is the weak tier, any "gpt-4*" the strong one.
    alias = client.chat.completions.create(model="openrouter/mixtral-cheap", messages=messages)
    assert alias.choices[0].message.content == rec["weak_response"]

    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="gpt-4-1106-preview", messages=messages, stream=True)
        if c.choices
    )
    assert streamed == rec["strong_response"]


def test_replay_miss_falls_back_to_mock_answer(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="mixtral-8x7b-instruct", messages=[{"role": "user", "content": "Not a recorded prompt"}]
    )
    assert raw.headers["x-mock-replay"] == "miss"
    assert raw.parse().choices[0].message.content.startswith("Mock answer from mixtral-8x7b-instruct: ")

    rec = load_eval50()[0]
    unmapped = client.chat.completions.with_raw_response.create(
        model="claude-3-haiku", messages=[{"role": "user", "content": rec["prompt"]}]
    )
    assert unmapped.headers["x-mock-replay"] == "miss"


# --------------------------------------------------------------------------- multi-worker


def test_runtime_faults_shared_across_workers() -> None:
    proc, base = _start_server("--workers", "2")
    try:
        body = {"model": "gpt-4o-mini", "messages": MESSAGES}
        assert _http("POST", f"{base}/_mock/faults", {"gpt-4o-mini": {"error": "503"}})[0] == 200
        # urllib opens a new connection per request, so these spread over both workers.
        assert {_http("POST", f"{base}/v1/chat/completions", body)[0] for _ in range(12)} == {503}
        assert _http("DELETE", f"{base}/_mock/faults")[0] == 200
        assert {_http("POST", f"{base}/v1/chat/completions", body)[0] for _ in range(12)} == {200}
    finally:
        stop_process(proc, timeout=10)


# --------------------------------------------------------------------------- in-process


async def _call_asgi(app: Any, body: bytes) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_fault_rate_counter_unit() -> None:
    store = FaultStore({"m": {"error": "500", "rate": 0.3}})
    fails = [store.trigger("m", 0.3) for _ in range(10)]
    assert sum(fails) == 3
    assert fails == [False, False, False, True, False, False, True, False, False, True]


def test_token_pieces_round_trip() -> None:
    text = "Hello, world!  It's 42.\n"
    pieces = token_pieces(text)
    assert "".join(pieces) == text
    assert len(pieces) == count_tokens(text)
