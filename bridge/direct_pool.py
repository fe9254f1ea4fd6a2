"""The hot path to the endpoint: requests handed straight to httpcore2's connection pool.

Measured (bench/README.md), building an `httpx2.Request`, passing it through the
client's send layers and wrapping the answer in an `httpx2.Response` cost ~0.15 ms
of CPU per relayed call: header objects normalised three times over, cookie and
redirect machinery the bridge never uses. For the endpoint itself — no proxy,
no auth flow (API keys and user ids are static headers) — the bridge builds the
httpcore2 request once-normalised and reads the httpcore2 response through a
thin wrapper with the few attributes it uses. httpcore2's errors are translated
by httpx2's own mapping, so callers see the same exceptions either way.

Everything else (a proxy, a user-token file or OAuth, another URL) goes through
`httpx2.AsyncClient.send` as before. The responses are not decompressed here, so
these requests ask for `accept-encoding: identity`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from typing import Any

import httpcore2
import httpx2

try:  # httpx2's own translation of httpcore2 errors; without it the fast path is simply not used
    from httpx2._transports.default import map_httpcore_exceptions as _map_errors
except ImportError:  # pragma: no cover - another httpx2 layout
    _map_errors = None  # type: ignore[assignment]


class DirectHeaders(dict[str, str]):
    """Response headers: lower-case names to values (`get`), plus the raw pairs (`raw`)."""

    raw: list[tuple[bytes, bytes]]


class DirectResponse:
    """The few parts of an `httpx2.Response` the bridge reads, over an httpcore2 response."""

    __slots__ = ("status_code", "headers", "_core", "_map_errors")

    def __init__(self, core: httpcore2.Response, map_errors: Callable[[], AbstractContextManager[Any]]) -> None:
        self._core = core
        self._map_errors = map_errors
        self.status_code = core.status
        headers = DirectHeaders()
        for name, value in core.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        headers.raw = list(core.headers)
        self.headers = headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        with self._map_errors():
            async for chunk in self._core.aiter_stream():
                if chunk:
                    yield chunk

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    async def aclose(self) -> None:
        with self._map_errors():
            await self._core.aclose()


class DirectSender:
    """Sends requests for one endpoint straight to the connection pool of its transport."""

    def __init__(self, pool: Any, url: httpx2.URL, base_headers: dict[str, str]) -> None:
        self._pool = pool
        self._url = httpcore2.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path)
        # `netloc` keeps an IPv6 address in brackets (`[::1]:8000`), as the Host header must.
        self._base = {"host": url.netloc.decode("ascii"), **{k.lower(): v for k, v in base_headers.items()},
                      "accept-encoding": "identity"}

    @classmethod
    def for_client(cls, client: httpx2.AsyncClient, url: httpx2.URL,
                   direct_transport: httpx2.AsyncBaseTransport | None) -> DirectSender | None:
        """A sender when the endpoint is reached by `direct_transport` without an auth flow, else None."""
        if _map_errors is None or direct_transport is None or client.auth is not None:
            return None
        try:
            if client._transport_for_url(url) is not direct_transport:  # a proxy is mounted for it
                return None
        except AttributeError:  # pragma: no cover - another httpx2 layout
            return None
        pool = getattr(direct_transport, "_pool", None)
        if pool is None or not hasattr(pool, "handle_async_request"):
            return None
        return cls(pool, url, dict(client.headers))

    async def send(self, method: str, body: bytes | None, headers: dict[str, str] | None,
                   extensions: dict[str, Any]) -> DirectResponse:
        merged = {**self._base, **headers} if headers else self._base
        raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in merged.items()]
        if body is not None:
            raw.append((b"content-length", b"%d" % len(body)))
        request = httpcore2.Request(method, self._url, headers=raw, content=body if body is not None else b"",
                                    extensions=extensions)
        assert _map_errors is not None
        with _map_errors():
            core = await self._pool.handle_async_request(request)
        return DirectResponse(core, _map_errors)

