"""One runtime object per event loop: the clients, pools, queues and background workers that loop owns.

asyncpg pools, redis-py asyncio clients and aiohttp sessions belong to the loop that created them. Each app
used to keep its own `{id(loop): value}` dict, with its own staleness rule — and an id can be reused by a
new loop once the old one is gone. Here a `LoopRuntime` hangs off the loop itself (a WeakKeyDictionary keyed
by the loop object, never its id), apps register what they create with the closer that releases it, and
`runtime_close()` (the ASGI lifespan shutdown, a test's loop teardown) runs those closers in reverse order
of registration: what was started last (a settle queue, the ledger writer) drains before what it needs (the
Redis client, the asyncpg pool) is closed.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
Closer = Callable[[Any], Awaitable[None]]


class LoopRuntime:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)
        self.values: dict[str, Any] = {}
        self.closers: list[tuple[str, Closer | None]] = []  # in registration order
        self.locks: dict[str, asyncio.Lock] = {}

    def get(self, name: str) -> Any:
        return self.values.get(name)

    def put(self, name: str, value: T, *, close: Closer | None = None) -> T:
        """Keep `value` for this loop under `name`; `close(value)` runs at `runtime_close()` (reverse order)."""
        if name in self.values:
            self.closers = [(n, c) for n, c in self.closers if n != name]
        self.values[name] = value
        self.closers.append((name, close))
        return value

    def get_or_put(self, name: str, make: Callable[[], T], *, close: Closer | None = None) -> T:
        """The value kept under `name`, or `make()` kept there now (with `close`, as `put`)."""
        value = self.values.get(name)
        return value if value is not None else self.put(name, make(), close=close)

    def pop(self, name: str) -> Any:
        self.closers = [(n, c) for n, c in self.closers if n != name]
        return self.values.pop(name, None)

    def lock(self, name: str) -> asyncio.Lock:
        lock = self.locks.get(name)
        if lock is None:
            lock = self.locks[name] = asyncio.Lock()
        return lock

    async def aclose(self) -> None:
        for name, close in reversed(self.closers):
            value = self.values.pop(name, None)
            if close is None or value is None:
                continue
            try:
                await close(value)
            except Exception:
                logger.exception("closing %s at loop shutdown failed", name)
        self.closers.clear()


_runtimes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopRuntime] = weakref.WeakKeyDictionary()


def runtime() -> LoopRuntime:
    """The running loop's runtime (created on first use)."""
    loop = asyncio.get_running_loop()
    current = _runtimes.get(loop)
    if current is None:
        current = _runtimes[loop] = LoopRuntime(loop)
    return current


async def runtime_close() -> None:
    """Close everything the running loop's runtime holds, newest first, and forget it."""
    loop = asyncio.get_running_loop()
    current = _runtimes.pop(loop, None)
    if current is not None:
        await current.aclose()
