"""The bytes to and from the remote: an httpcore2 network backend on plain asyncio protocols.

Why not httpcore2's own (anyio) backend: measured, every read and write there
costs an anyio cancel scope (`fail_after`), every write a `sleep(0)`, and every
reuse of a pooled connection a `poll()` — about a quarter of the bridge's CPU
per relayed call. Here a read that finds data waiting returns it at once, a
timer exists only while a read actually waits, writes go straight to the
transport (waiting only when it pushes back), and "is this idle connection
readable" is answered from the buffer.

It also owns the sockets' options: TCP keepalive, so a connection whose peer
vanished without a FIN (a laptop asleep, a NAT that forgot it) fails instead of
hanging a call for hours.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore2
from httpcore2._backends.base import AsyncNetworkBackend, AsyncNetworkStream

_HIGH_WATER = 1 << 20  # bytes buffered before the socket stops being read (the reader is behind)
_LOW_WATER = 1 << 18
# TCP keepalive: probe a connection after 30 s of silence, every 10 s, give up after 3 unanswered probes.
KEEPALIVE_IDLE = 30
KEEPALIVE_INTERVAL = 10
KEEPALIVE_PROBES = 3


def keepalive_options() -> list[tuple[int, int, int]]:
    """Socket options enabling TCP keepalive with the bridge's timings, where the platform has them."""
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPALIVE", KEEPALIVE_IDLE),
                        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL), ("TCP_KEEPCNT", KEEPALIVE_PROBES)):
        option = getattr(socket, name, None)
        if option is not None:
            options.append((socket.IPPROTO_TCP, option, value))
    return options


class _Protocol(asyncio.Protocol):
    """Buffers what arrives; wakes the one reader waiting; tells the writer when to hold back."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.reading_paused = False
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > _HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.eof = True
        self.error = exc
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        writable, self.writable = self.writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def take(self, max_bytes: int) -> bytes:
        chunk = self.chunks.popleft()
        if len(chunk) > max_bytes:
            self.chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self.buffered -= len(chunk)
        if self.reading_paused and self.buffered < _LOW_WATER and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return chunk


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class AsyncioStream(AsyncNetworkStream):
    """One connection, as httpcore2 reads and writes it."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not protocol.chunks and not protocol.eof:
            loop = asyncio.get_running_loop()
            waiter = protocol.waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter) if timeout is not None else None
            try:
                await waiter
            except TimeoutError:
                raise httpcore2.ReadTimeout("read timed out") from None
            finally:
                protocol.waiter = None
                if timer is not None:
                    timer.cancel()
        if protocol.chunks:
            return protocol.take(max_bytes)
        if protocol.error is not None:
            raise httpcore2.ReadError(str(protocol.error) or type(protocol.error).__name__)
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._transport.is_closing():
            raise httpcore2.WriteError("the connection is closed")
        self._transport.write(buffer)
        writable = self._protocol.writable
        if writable is not None:
            try:
                await asyncio.wait_for(asyncio.shield(writable), timeout)
            except TimeoutError:
                raise httpcore2.WriteTimeout("write timed out") from None
        if self._protocol.error is not None:
            raise httpcore2.WriteError(str(self._protocol.error) or type(self._protocol.error).__name__)

    async def aclose(self) -> None:
        if self._transport.get_write_buffer_size():
            self._transport.abort()  # a peer that stopped reading must not keep the socket alive
        else:
            self._transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            transport = await asyncio.wait_for(
                loop.start_tls(self._transport, self._protocol, ssl_context, server_hostname=server_hostname),
                timeout,
            )
        except TimeoutError:
            self._transport.abort()
            raise httpcore2.ConnectTimeout("TLS handshake timed out") from None
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            self._transport.abort()
            raise httpcore2.ConnectError(str(exc) or type(exc).__name__) from exc
        if transport is None:  # pragma: no cover - the loop closed meanwhile
            raise httpcore2.ConnectError("TLS handshake failed: connection closed")
        self._protocol.transport = transport  # type: ignore[assignment]
        return AsyncioStream(transport, self._protocol)  # type: ignore[arg-type]

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return bool(self._protocol.chunks) or self._protocol.eof
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


STAGGER = 0.25  # seconds before the next address is tried alongside (RFC 8305's connection attempt delay)


async def _connect_staggered(host: str, port: int, local: tuple[str, int] | None) -> tuple[Any, _Protocol]:
    """Connect to the first address that answers, starting the next one every `STAGGER` seconds ("happy
    eyeballs", which uvloop's `create_connection` does not do): an IPv6 route that silently drops packets
    must not cost the whole connect timeout."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = _interleave([info[4] for info in infos])
    if len(addresses) <= 1:
        return await loop.create_connection(_Protocol, host, port, local_addr=local)  # type: ignore[return-value]
    winner: asyncio.Future[tuple[Any, _Protocol]] = loop.create_future()
    errors: list[OSError] = []
    attempts: list[asyncio.Task[None]] = []

    async def attempt(address: tuple[Any, ...], delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            connected = await loop.create_connection(_Protocol, address[0], address[1], local_addr=local)
        except OSError as exc:
            errors.append(exc)
            if len(errors) == len(addresses) and not winner.done():
                winner.set_exception(errors[0])
            return
        if winner.done():
            connected[0].close()
        else:
            winner.set_result(connected)  # type: ignore[arg-type]

    attempts = [asyncio.ensure_future(attempt(address, index * STAGGER)) for index, address in enumerate(addresses)]
    try:
        return await winner
    finally:
        for task in attempts:
            task.cancel()


def _interleave(addresses: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Unique addresses, alternating families (IPv6 first when present), as RFC 8305 orders them."""
    unique = list(dict.fromkeys(addresses))
    v6 = [a for a in unique if ":" in str(a[0])]
    v4 = [a for a in unique if ":" not in str(a[0])]
    ordered: list[tuple[Any, ...]] = []
    for index in range(max(len(v6), len(v4))):
        ordered += [group[index] for group in (v6, v4) if index < len(group)]
    return ordered


class AsyncioBackend(AsyncNetworkBackend):
    """Opens connections for httpcore2's pool."""

    def __init__(self, socket_options: Iterable[tuple[int, int, int]] = ()) -> None:
        self._socket_options = list(socket_options)

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        try:
            transport, protocol = await asyncio.wait_for(_connect_staggered(host, port, local), timeout)
        except TimeoutError:
            raise httpcore2.ConnectTimeout("connection timed out") from None
        except OSError as exc:
            raise httpcore2.ConnectError(str(exc) or type(exc).__name__) from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            for option in [*self._socket_options, *(socket_options or ())]:
                try:
                    sock.setsockopt(*option)
                except OSError:
                    pass  # an option this platform does not support: the connection works without it
        return AsyncioStream(transport, protocol)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> AsyncNetworkStream:
        raise httpcore2.ConnectError("unix sockets are not used by the bridge")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
