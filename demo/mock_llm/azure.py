"""The mock's Azure OpenAI deployments: ``POST /openai/deployments/{deployment}/chat/completions?api-version=…``.

The ``api-key`` header and the ``api-version`` query parameter are required (401 / 404 as Azure answers without
them; a key starting ``sk-bad`` is refused). The body's model defaults to the deployment name; the answer is the
chat endpoint's, with its faults and usage (``X-Mock-Cached-Tokens`` → prompt_tokens_details.cached_tokens).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from demo.mock_llm.anthropic import replaying_receive, request_headers
from demo.mock_llm.common import Receive, Scope, Send, _dumps

PREFIX = "/openai/deployments/"


def handles(method: str, path: str) -> bool:
    return method == "POST" and path.startswith(PREFIX) and path.endswith("/chat/completions")


async def handle(app: Any, scope: Scope, receive: Receive, send: Send) -> None:
    from demo.mock_llm.app import _HTTPError, _read_json, _send_error

    deployment = scope["path"].rstrip("/")[len(PREFIX) : -len("/chat/completions")]
    key = request_headers(scope).get("api-key", "")
    if not key or key.startswith("sk-bad"):
        await _send_error(send, 401, "Access denied due to invalid subscription key or wrong API endpoint.", code="401")
        return
    if not parse_qs(scope.get("query_string", b"").decode()).get("api-version"):
        await _send_error(send, 404, "Resource not found", code="404")
        return
    try:
        body = await _read_json(receive)
    except _HTTPError as exc:
        await _send_error(send, exc.status, exc.message)
        return
    body.setdefault("model", deployment)
    await app._chat(scope, replaying_receive(_dumps(body), receive), send)
