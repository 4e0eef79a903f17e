"""OpenAI-compatible mock LLM upstream for tests, load tests, chaos drills and replay evals.

A raw ASGI app (no Django, no pydantic) so it starts instantly, answers in tens of
microseconds and can be run standalone (or as ``manage.py mock_llm``)::

    python -m demo.mock_llm --port 8001 [--workers N] [--replay PATH] [--latency-ms X]

Endpoints
    POST /v1/chat/completions   non-streaming and SSE streaming (OpenAI wire format,
                                ``stream_options.include_usage``, logprobs, ``n``, ``stop``)
    POST /v1/embeddings         deterministic feature-hashed unit vectors (float or base64)
    GET  /v1/models[/{id}]      GET /health
    GET|POST|DELETE /_mock/faults   runtime fault injection (see below)
    GET|DELETE      /_mock/stats    per-model request counters (lets tests assert that
                                    the gateway did / did not call upstream)
The ``/v1`` prefix is optional, so ``base_url`` may or may not include it.

Answers are a pure function of (model, messages): ``"Mock answer from {model}: ..."``
followed by a digest-derived sentence whose length (6-45 words) depends on the
prompt hash.  In replay mode (``replay_path``) prompts recorded in a RouteLLM-style
fixture are answered with what the real model of the requested tier said; the
``X-Mock-Replay: hit|miss`` response header tells which happened.

Usage is computed with :mod:`finops.tokens`, the same counter the gateway
uses for its pre-call cost estimate, so estimates reconcile exactly.

Per-request controls (request headers)
    X-Mock-Latency-Ms: <float>       delay before the response (replaces the default latency)
    X-Mock-Chunk-Delay-Ms: <float>   delay between streamed content chunks
    X-Mock-Error: 429|500|503|<4xx/5xx>|timeout|malformed
    X-Mock-Truncate: 1               stream stops half-way without finish_reason/usage/[DONE];
                                     non-stream answer is cut in half with finish_reason "length"
    X-Mock-Cached-Tokens: <int>      reported as usage.prompt_tokens_details.cached_tokens
                                     (also accepted as body ``metadata.mock_cached_tokens``)
    X-Mock-Logprob: <float>          forces the mean of the returned token logprobs
    X-Mock-Reasoning-Tokens: <int>   a reasoning model: adds this many hidden tokens to usage.completion_tokens and
                                     reports them as usage.completion_tokens_details.reasoning_tokens
    Body ``tools`` with ``tool_choice`` "required" or a named function: each answer is a call of that function (the
    first tool for "required") with arguments ``{"answer": <the answer text>}``, streamed in argument fragments.
    Body ``stream_options.continuous_usage_stats`` (vLLM; with ``include_usage``): every chunk carries the usage so
    far (cumulative), then the final usage chunk.
    X-Mock-Completion-Tokens: <int>  each answer is this many tokens long (before max_tokens cuts it): an
                                     upstream that writes until its own maximum when no limit is sent
    X-Mock-Retry-After: <seconds>    adds retry-after / retry-after-ms to error responses
    X-Mock-Service-Tier: <tier>      the answer's service_tier ("priority": billed at the price row's multiplier)
    X-Mock-No-Usage: 1               a stream never reports usage, even when include_usage asks for it
    X-Mock-Reasoning-Tokens: <int>   each answer first thinks this many tokens, streamed as ``reasoning_content``
                                     deltas, counted in ``completion_tokens`` (and ``reasoning_tokens``) and cut
                                     by ``max_tokens`` together with the answer, as OpenAI's reasoning models do
    Native formats (their own modules): Anthropic ``/v1/messages`` (anthropic.py), Azure OpenAI
    ``/openai/deployments/{d}/chat/completions`` (azure.py), Gemini ``/v1beta/models/{m}:generateContent`` (gemini.py)

Per-model faults (``model_faults`` / ``--faults`` / ``POST /_mock/faults``)::

    {"model-name": {"error": "500", "rate": 0.3, "latency_ms": 50,
                    "chunk_delay_ms": 5, "truncate": false, "logprob": -2.0,
                    "retry_after": 1}}

The key ``"*"`` applies to every model (model-specific keys override it).  ``rate``
(default 1.0) is applied with a deterministic per-model counter: request *n* fails
iff ``floor(n*rate) > floor((n-1)*rate)``, so rate 0.5 fails requests 2, 4, 6, ...
and runs are reproducible.  ``POST /_mock/faults`` merges (replacing whole
per-model specs; a ``null`` spec removes one) and resets the counters;
``DELETE /_mock/faults`` removes every fault, including configured ones.

Multiple workers: ``serve(workers>1)`` keeps faults in a small JSON file
(``$FINOPS_MOCK_FAULTS_FILE``) that every worker re-reads when its mtime changes,
so the runtime fault API works against any worker.  Rate counters and
``/_mock/stats`` stay per worker, so tests that need exact counts use 1 worker.

Modules: ``common`` (types, constants, answers, embeddings), ``stores`` (faults, replay),
``app`` (the ASGI app), ``server`` (factories, uvicorn, the command line).
"""

from demo.mock_llm.app import MockLLM
from demo.mock_llm.common import DEFAULT_REPLAY_MODEL_MAP, STRONG_RECORDED_MODEL, WEAK_RECORDED_MODEL, mock_answer
from demo.mock_llm.server import app_from_env, build_app, main, serve
from demo.mock_llm.stores import FaultStore, ReplayStore

__all__ = [
    "DEFAULT_REPLAY_MODEL_MAP",
    "FaultStore",
    "MockLLM",
    "ReplayStore",
    "STRONG_RECORDED_MODEL",
    "WEAK_RECORDED_MODEL",
    "app_from_env",
    "build_app",
    "main",
    "mock_answer",
    "serve",
]
