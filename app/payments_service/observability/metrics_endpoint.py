"""The /metrics HTTP endpoint, served from the server's event loop.

prometheus_client's own server starts a thread per connection and never times one out, so
idle connections pile up threads without bound. This one is a few coroutines on the loop
the gRPC server already runs: at most :data:`MAX_CONNECTIONS` connections at once, each must
send its request within :data:`REQUEST_TIMEOUT_SECONDS`, and each gets one answer and is
closed. When all are taken, the oldest one that has not sent its request yet is closed to
make room (a scraper sends its request at once), so idle connections never lock out
Prometheus. Prometheus asks for
OpenMetrics, which carries the exemplars; other clients get the classic text format.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

logger = logging.getLogger(__name__)

MAX_CONNECTIONS = 32
REQUEST_TIMEOUT_SECONDS = 10.0
#: How long the values read at scrape time (payments stored) may take to refresh.
REFRESH_TIMEOUT_SECONDS = 2.0
_MAX_REQUEST_HEAD_BYTES = 16 * 1024

Refresh = Callable[[], Awaitable[None]]


class MetricsEndpoint:
    """Serves ``registry`` at ``http://host:port/metrics``."""

    def __init__(
        self, registry: CollectorRegistry, host: str, port: int, refresh: Refresh | None = None
    ) -> None:
        self._registry = registry
        # "[::]" (every interface) as asyncio spells it: one IPv4 and one IPv6 socket
        # (asyncio makes an IPv6 socket IPv6-only, unlike gRPC's dual-stack one).
        self._host: str | None = None if host.strip("[]") == "::" else host.strip("[]")
        self._port = port
        self._refresh = refresh
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.Transport] = set()
        #: Open connections that have not sent their request yet, oldest first.
        self._silent: dict[asyncio.Transport, None] = {}

    @property
    def port(self) -> int:
        """The bound port once started, else the configured one."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    async def start(self) -> None:
        """Start listening. Raises OSError when the port is taken."""
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=_MAX_REQUEST_HEAD_BYTES, backlog=128
        )
        logger.info("Serving Prometheus metrics on port %d at /metrics", self.port)

    async def stop(self) -> None:
        """Stop listening and close the open connections."""
        if self._server is None:
            return
        self._server.close()
        for transport in list(self._open):
            transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport: asyncio.Transport = writer.transport  # type: ignore[assignment]
        if len(self._open) >= MAX_CONNECTIONS:
            if not self._silent:
                transport.abort()
                return
            next(iter(self._silent)).abort()  # the oldest silent one makes room
        self._open.add(transport)
        self._silent[transport] = None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_SECONDS)
            self._silent.pop(transport, None)
            status, headers, body = await self._answer(head)
            lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers)]
            lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
            writer.write("\r\n".join(lines).encode("latin-1") + body)
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT_SECONDS)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client that dawdles, overflows or leaves: nothing to tell anyone
        finally:
            self._open.discard(transport)
            self._silent.pop(transport, None)
            transport.abort()

    async def _answer(self, head: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, _, rest = request_line.partition(" ")
        path = rest.partition(" ")[0].partition("?")[0]
        if method != "GET":
            return "405 Method Not Allowed", [("Allow", "GET")], b""
        if path != "/metrics":
            return "404 Not Found", [("Content-Type", "text/plain")], b"try /metrics\n"
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if self._refresh is not None:
            try:
                await asyncio.wait_for(self._refresh(), REFRESH_TIMEOUT_SECONDS)
            except TimeoutError:
                logger.debug(
                    "Refreshing scrape-time metrics took over %gs", REFRESH_TIMEOUT_SECONDS
                )
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        body = encoder(self._registry)
        answer = [("Content-Type", content_type)]
        if gzip_accepted(headers.get("accept-encoding", "")):
            import gzip

            body = gzip.compress(body)
            answer.append(("Content-Encoding", "gzip"))
        return "200 OK", answer, body
