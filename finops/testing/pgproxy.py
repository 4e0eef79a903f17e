"""A TCP proxy in front of Postgres that can be cut or hung, to make Postgres unreachable (or hung) for one process only.

The shared Postgres must keep running for everyone else (other test runs, the test process itself), so a
chaos test points the process under test at `postgresql://…@127.0.0.1:<proxy.port>/…` instead, and calls
`outage()` / `recover()`. Used by bench/chaos.py and apps/gateway/tests/test_key_cache_outage.py.
"""

from __future__ import annotations

import asyncio
import os
import threading
from urllib.parse import parse_qs, urlparse

from finops.processes import free_port, wait_for_port


def pg_target(database_url: str | None = None) -> str:
    """Where Postgres listens, for `PgProxy(target)`: the unix socket path, or host:port.

    From a libpq URL (DATABASE_URL by default), e.g. `postgresql://postgres@/finops?host=/path/pgdata`.
    """
    url = urlparse(database_url or os.environ["DATABASE_URL"])
    host = parse_qs(url.query).get("host", [url.hostname or "127.0.0.1"])[0]
    port = url.port or int(parse_qs(url.query).get("port", ["5432"])[0])
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}"


class PgProxy:
    """A TCP → Postgres proxy on loopback, in its own thread and loop. `outage()` drops every connection and
    refuses new ones, which is what the gateway sees when Postgres stops; `recover()` lets them in again."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.port = free_port()
        self.up = threading.Event()
        self.up.set()
        self.flowing = threading.Event()  # cleared by hang(): connections stay open, nothing passes either way
        self.flowing.set()
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_for_port(self.port, timeout=10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self.loop.run_forever()

    async def _open_target(self):
        if self.target.startswith("/"):
            return await asyncio.open_unix_connection(self.target)
        host, port = self.target.rsplit(":", 1)
        return await asyncio.open_connection(host, int(port))

    async def _client(self, reader, writer) -> None:
        if not self.up.is_set():
            writer.close()
            return
        try:
            up_reader, up_writer = await self._open_target()
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    while not self.flowing.is_set():  # hung: hold the bytes, like a SIGSTOPped server
                        await asyncio.sleep(0.01)
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    def database_url(self, via: str, name: str) -> str:
        """The libpq URL of database `name` through this proxy, as `via`'s user (postgres when it names none)."""
        return f"postgresql://{urlparse(via).username or 'postgres'}@127.0.0.1:{self.port}/{name}"

    def outage(self) -> None:
        self.up.clear()

        def drop():
            for w in list(self.writers):
                w.transport.abort()

        self.loop.call_soon_threadsafe(drop)

    def recover(self) -> None:
        self.up.set()

    def hang(self) -> None:
        """Postgres hung (as under SIGSTOP): connections stay open and new ones are accepted, but no byte passes."""
        self.flowing.clear()

    def resume(self) -> None:
        """The held bytes pass again, in order (as after SIGCONT)."""
        self.flowing.set()

    def close(self) -> None:
        """Drop every connection, stop listening and stop the proxy's loop."""
        self.outage()

        def shut():
            if self.server is not None:
                self.server.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(shut)
        self.thread.join(timeout=5)
