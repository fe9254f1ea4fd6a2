"""The desktop side: newline-delimited JSON-RPC over the process's stdin and stdout.

Why not the SDK's `stdio_server()`: it validates every line into pydantic
models and re-serializes every outgoing message, and it reads and writes
through worker threads. The relay forwards bytes it never needs to re-model,
so this transport hands it raw lines and writes raw lines, on the event loop
(non-blocking pipes), which is most of the bridge's per-message cost.

What it keeps from the SDK's transport: while the bridge runs, fd 0 reads from
/dev/null and fd 1 points at stderr, so a stray `print` or a child process can
never corrupt the JSON-RPC stream; the real pipes live on private descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import stat
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from bridge.messages import RequestId, valid_id

if sys.platform != "win32":
    import fcntl
else:  # pragma: no cover - Windows reads and writes through worker threads
    fcntl = None

_CHUNK = 256 * 1024


_HEAD = 1024


@dataclass(frozen=True, slots=True)
class OversizedLine:
    """A line longer than the limit was discarded; `size` is how many bytes it had.

    `head` keeps its first bytes, enough to find the request id so the desktop
    still gets an answer to that request.
    """

    size: int
    head: bytes = b""

    @property
    def request_id(self) -> RequestId | None:
        """The line's request id, read from its head (best effort)."""
        return id_from_head(self.head)


class StdoutClosed(Exception):
    """The desktop closed its end of stdout: nobody is listening any more."""


class _WriteFlow(asyncio.Protocol):
    """Flow control for the stdout pipe: lets writers wait while the pipe is full."""

    def __init__(self) -> None:
        self._can_write = asyncio.Event()
        self._can_write.set()
        self.closed = False

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._can_write.set()

    async def drain(self) -> None:
        await self._can_write.wait()


def _is_pipe_like(fd: int) -> bool:
    """Whether asyncio can drive this descriptor without threads (POSIX pipes and sockets)."""
    if fcntl is None:
        return False  # Windows' anonymous pipes are not overlapped: asyncio cannot poll them
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _widen_pipe(fd: int) -> None:
    """Ask for a 1 MiB pipe buffer (Linux): a big message then crosses in a few wake-ups, not dozens."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if setpipe is None:
        return
    try:
        fcntl.fcntl(fd, setpipe, 1 << 20)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size, or not a pipe: the default buffer works, just slower


def _dup_private(fd: int) -> int:
    """A private duplicate of `fd`, above the standard descriptors and not inherited by children.

    On Windows the duplicate is switched to binary mode: in the C runtime's default text mode every
    `\n` written would become `\r\n`, and JSON-RPC lines end with `\n` alone on every platform.
    """
    if fcntl is None:  # pragma: no cover - Windows
        duplicate = os.dup(fd)  # dup() handles are not inheritable by default
        import msvcrt

        msvcrt.setmode(duplicate, os.O_BINARY)
        return duplicate
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


class StdioChannel:
    """Reads JSON-RPC lines from stdin and writes them to stdout, without threads when both are pipes."""

    def __init__(self, max_line_bytes: int) -> None:
        self._max_line = max_line_bytes
        self._in_fd = -1
        self._out_fd = -1
        self._reader: asyncio.StreamReader | None = None
        self._in_transport: asyncio.ReadTransport | None = None
        self._out_transport: asyncio.WriteTransport | None = None
        self._out_flow: _WriteFlow | None = None
        self._restore: list[tuple[int, int]] = []
        self._write_lock = anyio.Lock()

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[StdioChannel]:
        """Claim fd 0 and fd 1 for the protocol, divert them, and restore them on exit."""
        sys.stdout.flush()
        self._in_fd = _dup_private(0)
        self._out_fd = _dup_private(1)
        self._divert()
        loop = asyncio.get_running_loop()
        try:
            if _is_pipe_like(self._in_fd):
                _widen_pipe(self._in_fd)
                self._reader = asyncio.StreamReader(limit=_CHUNK, loop=loop)
                protocol = asyncio.StreamReaderProtocol(self._reader, loop=loop)
                self._in_transport, _ = await loop.connect_read_pipe(
                    lambda: protocol, os.fdopen(self._in_fd, "rb", buffering=0, closefd=False))
            if _is_pipe_like(self._out_fd):
                _widen_pipe(self._out_fd)
                flow = self._out_flow = _WriteFlow()
                transport, _ = await loop.connect_write_pipe(
                    lambda: flow, os.fdopen(self._out_fd, "wb", buffering=0, closefd=False)
                )
                self._out_transport = transport
            yield self
        finally:
            if self._in_transport is not None:
                self._in_transport.close()
            if self._out_transport is not None:
                self._out_transport.close()
            self._undivert()

    def _divert(self) -> None:
        """Point fd 0 at /dev/null and fd 1 at stderr; remember how to undo it."""
        for fd, target in ((0, os.open(os.devnull, os.O_RDONLY)), (1, os.dup(2))):
            saved = _dup_private(fd)
            os.dup2(target, fd)
            os.close(target)
            self._restore.append((fd, saved))

    def _undivert(self) -> None:
        for fd, saved in self._restore:
            with contextlib.suppress(OSError):
                os.dup2(saved, fd)
                os.close(saved)
        self._restore.clear()

    async def _read_chunk(self) -> bytes:
        if self._reader is not None:
            return await self._reader.read(_CHUNK)
        return await anyio.to_thread.run_sync(os.read, self._in_fd, _CHUNK, abandon_on_cancel=True)

    async def lines(self) -> AsyncIterator[bytes | OversizedLine]:
        """Yield each complete line (without its newline) until stdin reaches EOF.

        A line longer than the limit is skipped as it streams in (never held in
        memory) and reported as `OversizedLine`, so the caller can answer it.
        """
        buffer = bytearray()
        discarding = 0
        head = b""
        while True:
            chunk = await self._read_chunk()
            if not chunk:
                break
            start = 0
            while True:
                newline = chunk.find(b"\n", start)
                if newline < 0:
                    rest = len(chunk) - start
                    if discarding:
                        discarding += rest
                    elif len(buffer) + rest > self._max_line:
                        head = bytes((buffer + chunk[start : start + _HEAD])[:_HEAD])
                        discarding = len(buffer) + rest
                        buffer.clear()
                    else:
                        buffer += chunk[start:]
                    break
                if discarding:
                    yield OversizedLine(discarding + newline - start, head)
                    discarding = 0
                else:
                    if buffer:
                        buffer += chunk[start:newline]
                        line = bytes(buffer)
                        buffer.clear()
                    else:
                        line = chunk[start:newline]
                    if len(line) > self._max_line:
                        yield OversizedLine(len(line), line[:_HEAD])
                    elif line.strip():
                        yield line
                start = newline + 1
        if discarding:
            yield OversizedLine(discarding, head)
        elif buffer.strip():
            yield bytes(buffer)

    async def write(self, data: bytes, *, newline: bool = False) -> None:
        """Write whole lines to stdout (`newline` appends the line end); lines never interleave.

        Raises:
            StdoutClosed: the desktop is gone.
        """
        if self._out_transport is not None:
            assert self._out_flow is not None
            if self._out_flow.closed or self._out_transport.is_closing():
                raise StdoutClosed()
            # Synchronous writes with no await between them keep each line whole without a lock;
            # writing the line end separately spares copying a large message just to append it.
            self._out_transport.write(data)
            if newline:
                self._out_transport.write(b"\n")
            if self._out_transport.get_write_buffer_size() > _CHUNK:
                await self._out_flow.drain()
            return
        if newline:
            data += b"\n"
        async with self._write_lock:
            try:
                await anyio.to_thread.run_sync(_write_all, self._out_fd, data)
            except (BrokenPipeError, ConnectionResetError):
                raise StdoutClosed() from None

    async def flush(self) -> None:
        """Wait until everything written so far has reached the pipe (bounded by the caller)."""
        if self._out_transport is None or self._out_flow is None:
            return
        while self._out_transport.get_write_buffer_size() and not self._out_flow.closed:
            await asyncio.sleep(0.005)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]



_ID_VALUE = re.compile(rb'\s*:\s*("(?:[^"\\]|\\.){0,200}"|-?\d{1,19})\s*[,}]')


def id_from_head(head: bytes) -> RequestId | None:
    """The request id of a message too large to parse, read from its first bytes (best effort).

    Only a top-level `"id"` counts (one inside `params` is some tool's argument): the head is scanned with
    its nesting depth and strings tracked.
    """
    depth, index, length = 0, 0, len(head)
    while index < length:
        byte = head[index]
        if byte == 0x22:  # a string: a key at depth 1, or a value to skip
            end = index + 1
            while end < length and head[end] != 0x22:
                end += 2 if head[end] == 0x5C else 1
            if depth == 1 and head[index:end + 1] == b'"id"':
                match = _ID_VALUE.match(head, end + 1)
                if match is None:
                    return None
                try:
                    value = json.loads(match.group(1))
                except ValueError:
                    return None
                return value if valid_id(value) else None
            index = end + 1
            continue
        if byte in b"{[":
            depth += 1
        elif byte in b"}]":
            depth -= 1
        index += 1
    return None
