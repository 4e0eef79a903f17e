"""The semantic tier's CPU per request, by prompt length (`manage.py bench_semantic`).

For each length class (30, 400 and 2,000 characters) a dedicated org's cache is filled with distinct prompts of
that class, then distinct *other* prompts of the class go through the real hooks (`cache_plan`, the exact
lookup, `cache_lookup_semantic`, `cache_store`; Redis, pgvector, the local model): every one a miss, as in the
gateway benchmark. The CPU time of this process (`time.process_time`: the event loop and the embedding thread)
is read around the semantic lookup and around the store, per request. Postgres' own CPU is not in it.

- *lookup*: what every miss pays before the upstream call (stage 1; stage 2 only when a candidate is near).
- *store, light load*: the store after the response with an unlimited store budget, i.e. a process with CPU to
  spare: the full model embeds every storable miss. Under load the budget caps this at
  FINOPS_CACHE_SEMANTIC_STORE_CPU_SHARE of a core and sheds the rest.
- *full model on every miss (before)*: the previous design's cost, the full model embedding each prompt once
  (prompts over the model's 256 word pieces were skipped after tokenising them), measured in the same run.

Prompts: 30 and 400 characters are distinct MMLU / GSM8K questions (fixtures/routellm/full.jsonl.gz) cut back to
a word boundary; 2,000 characters are fixtures/prompts/long_prompts.jsonl.gz.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from evals.cache.long_prompts import cut_at_whitespace, load_long_prompts, load_source
from evals.cache.replay import ROOT

MODEL = "gpt-4o-mini"


@dataclass
class ClassResult:
    chars: int
    mean_chars: float
    cached: int
    requests: int
    lookup_ms: list[float]
    store_ms: list[float]
    before_ms: list[float]
    static_us: list[float]
    confirms: int
    stored: int
    hits: int

    @property
    def total_ms(self) -> list[float]:
        return [a + b for a, b in zip(self.lookup_ms, self.store_ms, strict=True)]

    @staticmethod
    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else 0.0


def prompts_of(chars: int, count: int) -> list[str]:
    """`count` distinct prompts of about `chars` characters."""
    if chars >= 2000:
        return [p["prompt"] for p in load_long_prompts()][:count]
    out: list[str] = []
    seen: set[str] = set()
    for record in load_source():
        text = " ".join(record["prompt"].split())
        if len(text) < chars:
            continue
        cut = cut_at_whitespace(text, chars)
        if cut not in seen and len(cut) >= chars * 0.8:
            seen.add(cut)
            out.append(cut)
        if len(out) == count:
            break
    return out


def run(*, classes: tuple[int, ...] = (30, 400, 2000), cached: int = 1000, requests: int = 200) -> list[ClassResult]:
    from apps.cache.services import cache_invalidate
    from apps.embeddings.embeddings import local_embedder
    from apps.ledger.services import prices_load_fixture
    from apps.tenancy.models import ApiKey
    from apps.tenancy.services import api_key_create, member_get_or_create, org_get_or_create, team_get_or_create

    prices_load_fixture(path=ROOT / "fixtures" / "prices.json")
    org = org_get_or_create(name="bench-semantic")
    team = team_get_or_create(org=org, name="bench")
    member = member_get_or_create(team=team, username="bench-semantic")
    key = ApiKey.objects.filter(member=member, name="bench semantic", revoked_at=None).first()
    key = key or api_key_create(member=member, name="bench semantic").api_key
    local_embedder.load()
    results = []
    for chars in classes:
        cache_invalidate(org_id=org.id)
        texts = prompts_of(chars, cached + requests)  # fewer when the class has fewer distinct prompts
        fill, probe = texts[: len(texts) - requests], texts[len(texts) - requests :]
        results.append(asyncio.run(_run_class(chars, fill, probe, org=org, team=team, member=member, key=key)))
    cache_invalidate(org_id=org.id)
    return results


def _answer(n: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"answer {n}"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }


async def _run_class(chars: int, fill: list[str], probe: list[str], *, org, team, member, key) -> ClassResult:
    from apps.cache import metrics
    from apps.cache.lookup import CacheRequest, cache_lookup_exact, cache_lookup_semantic, cache_plan, cache_store
    from apps.cache.semantic import store_budget
    from apps.embeddings.embeddings import local_embedder
    from apps.embeddings.static import static_embedder
    from apps.tenancy.types import Caller
    from finops.asyncdb import close_pools

    caller = Caller(api_key_id=key.id, api_key_prefix=key.prefix, org_id=org.id, team_id=team.id, member_id=member.id)

    def request(text: str) -> CacheRequest:
        messages = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": text}]
        return CacheRequest(
            caller=caller,
            request_id=uuid.uuid4(),
            requested_model=MODEL,
            messages=messages,
            body={"model": MODEL, "messages": messages, "temperature": 0},
            prompt_tokens_estimate=100,
        )

    store_budget.unlimited = True  # fill (and the light-load store figures): every storable entry embedded
    try:
        for n, text in enumerate(fill):
            state = await cache_plan(request=request(text))
            if (await cache_lookup_exact(state=state)).hit is None:
                await cache_lookup_semantic(state=state)
                await cache_store(state=state, response=_answer(n), answer_model=MODEL)
        lookup_ms, store_ms, before_ms, static_us = [], [], [], []
        confirms_before = metrics.CACHE_SEMANTIC_CONFIRMS._value.get()
        stored_before = metrics.CACHE_STORES.labels(tier="semantic", outcome="stored")._value.get()
        hits = 0
        for n, text in enumerate(probe):
            state = await cache_plan(request=request(text))
            await cache_lookup_exact(state=state)
            started = time.process_time()
            found = await cache_lookup_semantic(state=state)
            middle = time.process_time()
            if found.hit is None:
                await cache_store(state=state, response=_answer(len(fill) + n), answer_model=MODEL)
            else:
                hits += 1
            ended = time.process_time()
            lookup_ms.append((middle - started) * 1000)
            store_ms.append((ended - middle) * 1000)
        confirms = int(metrics.CACHE_SEMANTIC_CONFIRMS._value.get() - confirms_before)
        stored = int(metrics.CACHE_STORES.labels(tier="semantic", outcome="stored")._value.get() - stored_before)
    finally:
        store_budget.unlimited = False
    for text in probe:  # the previous design: the full model on every miss (the same length check first)
        started = time.process_time()
        local_embedder.encode([text])
        before_ms.append((time.process_time() - started) * 1000)
        started = time.process_time()
        static_embedder.embed(text)
        static_us.append((time.process_time() - started) * 1e6)
    await close_pools()
    return ClassResult(
        chars=chars,
        mean_chars=float(np.mean([len(t) for t in probe])),
        cached=len(fill),
        requests=len(probe),
        lookup_ms=lookup_ms,
        store_ms=store_ms,
        before_ms=before_ms,
        static_us=static_us,
        confirms=confirms,
        stored=stored,
        hits=hits,
    )


def markdown(results: list[ClassResult]) -> str:
    from apps.embeddings.embeddings import local_embedder
    from finops.conf import conf

    p = ClassResult.pct
    lines = [
        "## Semantic tier: CPU per request by prompt length (`manage.py bench_semantic`)",
        "",
        f"Two stages (ADR-001): the static embedding proposes, the full model (all-MiniLM-L6-v2, {local_embedder.runtime} "
        f"runtime) confirms only a near candidate (static cosine ≥ {conf().cache_semantic_static_threshold}, not refused by the guard). "
        "Each row: a cache filled with distinct prompts of that length, then distinct other prompts of that length "
        "through the real hooks, all misses; CPU of the gateway-side process per request (event loop + embedding "
        "thread; Postgres' own CPU excluded). *Store*: `cache_store` after the response, both tiers (the exact tier's "
        "Redis write included); *light load*: the store budget lifted, so the full model embeds every storable miss; "
        "under load the budget caps that at "
        f"{conf().cache_semantic_store_cpu_share:.0%} of a core per process and sheds the rest. *Before*: the full model on every miss, as the "
        "previous design did, in the same run.",
        "",
        "| prompts | cached | requests | lookup CPU p50 | lookup CPU p95 | confirmed by the full model | static stage p50 "
        "| store, light load p50 | store, light load p95 | semantic entries stored | lookup + store p50 | lookup + store p95 "
        "| before: full model p50 | before: full model p95 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.chars:,}-character (mean {r.mean_chars:,.0f}) | {r.cached} | {r.requests} | {p(r.lookup_ms, 50):.2f} ms "
            f"| {p(r.lookup_ms, 95):.2f} ms | {r.confirms}/{r.requests} | {p(r.static_us, 50):.0f} µs "
            f"| {p(r.store_ms, 50):.2f} ms | {p(r.store_ms, 95):.2f} ms | {r.stored}/{r.requests} "
            f"| {p(r.total_ms, 50):.2f} ms | {p(r.total_ms, 95):.2f} ms "
            f"| {p(r.before_ms, 50):.2f} ms | {p(r.before_ms, 95):.2f} ms |"
        )
    lines += [
        "",
        "Prompts over the full model's 256 word pieces (every 2,000-character prompt here) are not matched by meaning: "
        "the static stage's tokenisation measures them and the tier stops there; the exact tier still serves their "
        "repeats. Prompts longer than `FINOPS_CACHE_SEMANTIC_MAX_CHARS` (or the org's *semantic max chars*) skip the "
        "tier before tokenising.",
    ]
    return "\n".join(lines)
