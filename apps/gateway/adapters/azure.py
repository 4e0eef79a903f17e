"""Azure OpenAI: the OpenAI wire format at `{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=…`,
with the key in the `api-key` header (the official `AsyncAzureOpenAI` client, one per deployment).

Provider options (the admin's JSON `options`):

    {"api_version": "2024-10-21", "deployments": {"gpt-4o": "my-gpt4o-deployment"}}

A model without a deployment entry is sent to a deployment of its own name. The answer is OpenAI's, so its usage
(cached tokens, reasoning tokens) is read by `apps.gateway.usage` like any OpenAI answer.
"""

from __future__ import annotations

from typing import Any

from openai import AsyncAzureOpenAI

from apps.gateway.adapters.base import AZURE, Adapter, Body, EventStream, as_dict
from apps.gateway.adapters.openai_compat import _close_client, as_bytes, sdk_complete, sdk_options, sdk_stream
from apps.gateway.selectors import Upstream
from finops.runtime import runtime

DEFAULT_API_VERSION = "2024-10-21"  # the GA data-plane version current when this adapter was written


def deployment_for(upstream: Upstream, model: str) -> str:
    deployments = upstream.options.get("deployments") or {}
    return str(deployments.get(model) or model)


def api_version(upstream: Upstream) -> str:
    return str(upstream.options.get("api_version") or DEFAULT_API_VERSION)


def azure_client(upstream: Upstream, deployment: str) -> AsyncAzureOpenAI:
    rt = runtime()
    key = f"upstream:azure:{hash(upstream)}:{api_version(upstream)}:{deployment}"
    client = rt.get(key)
    if client is None:
        client = AsyncAzureOpenAI(
            azure_endpoint=upstream.base_url,
            azure_deployment=deployment,
            api_version=api_version(upstream),
            api_key=upstream.api_key,
            **sdk_options(upstream),
        )
        rt.put(key, client, close=_close_client)
    return client


class AzureOpenAI(Adapter):
    kind = AZURE

    async def complete(self, upstream: Upstream, body: Body, *, headers: dict[str, str]) -> dict[str, Any]:
        body = as_dict(body)
        client = azure_client(upstream, deployment_for(upstream, str(body.get("model", ""))))
        answer = await sdk_complete(client, upstream.name, as_bytes(body), headers)
        answer["model"] = body.get("model", answer.get("model"))  # Azure names the model, not the deployment
        return answer

    async def stream(self, upstream: Upstream, body: Body, *, headers: dict[str, str]) -> tuple[EventStream, dict[str, Any]]:
        body = as_dict(body)
        client = azure_client(upstream, deployment_for(upstream, str(body.get("model", ""))))
        return await sdk_stream(client, upstream.name, as_bytes(body), headers)
