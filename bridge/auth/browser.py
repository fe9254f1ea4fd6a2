"""The human step of OAuth: the system browser, and the loopback callback it returns to.

The authorization URL is opened with Python's `webbrowser` (so `BROWSER` is
honoured: headless machines, tests) in a child process whose stdin and stdout
are /dev/null — stdout is the JSON-RPC channel, and a console browser or a
chatty `BROWSER` must not touch it — and is always printed to stderr too, for
when no browser can be opened. The callback is a small HTTP listener on
127.0.0.1 that takes one `GET /callback?code=…&state=…`, tells the user they can
close the tab, and hands the code to the SDK's flow (which checks `state`).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
from mcp.shared.auth import AuthorizationCodeResult

logger = logging.getLogger(__name__)

_OPEN_BROWSER = "import sys, webbrowser; sys.exit(0 if webbrowser.open(sys.argv[1]) else 3)"
_PAGE = (b"<!doctype html><html><head><meta charset='utf-8'><title>alloy-mcp-bridge</title></head><body "
         b"style='font-family:sans-serif;margin:3em'><h1>Signed in</h1><p>alloy-mcp-bridge has what it needs. "
         b"You can close this tab.</p></body></html>")
_FAILED = (b"<!doctype html><html><head><meta charset='utf-8'><title>alloy-mcp-bridge</title></head><body "
           b"style='font-family:sans-serif;margin:3em'><h1>Sign-in failed</h1><p>The authorization server did "
           b"not grant access. You can close this tab; the bridge reports the reason.</p></body></html>")


class SignInFailed(Exception):
    """The browser came back without a code (the user declined, or the server refused)."""


class LoopbackCallback:
    """The `redirect_uri` listener on 127.0.0.1:<port>/callback, for one sign-in at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._result: AuthorizationCodeResult | None = None
        self._error: str | None = None
        self._arrived = anyio.Event()
        self._listener: Any = None

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    async def listen(self) -> None:
        """Start listening (connections are accepted by `wait`). Raises OSError when the port is taken."""
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
        self._listener = listener.listeners[0] if hasattr(listener, "listeners") else listener

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with anyio.CancelScope(shield=True):
                await listener.aclose()

    async def _handle(self, stream: anyio.abc.ByteStream) -> None:
        async with stream:
            data = b""
            with anyio.move_on_after(5):
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = await stream.receive()
                    if not chunk:
                        break
                    data += chunk
            parts = data.split(b" ", 2)
            target = parts[1].decode("latin-1") if len(parts) >= 3 else "/"
            url = urlsplit(target)
            page, status = b"Not found", b"404 Not Found"
            if url.path == "/callback":
                query = parse_qs(url.query)
                if query.get("code"):
                    state, issuer = query.get("state"), query.get("iss")
                    self._result = AuthorizationCodeResult(code=query["code"][0], state=state[0] if state else None,
                                                           iss=issuer[0] if issuer else None)
                    page, status = _PAGE, b"200 OK"
                else:
                    self._error = (query.get("error_description") or query.get("error") or ["no code"])[0]
                    page, status = _FAILED, b"400 Bad Request"
                self._arrived.set()
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.send(b"HTTP/1.1 " + status + b"\r\ncontent-type: text/html; charset=utf-8\r\n"
                                  b"connection: close\r\ncontent-length: " + str(len(page)).encode() + b"\r\n\r\n"
                                  + page)

    async def wait(self, timeout: float, browser: anyio.abc.Process | None = None) -> AuthorizationCodeResult:
        """The browser's return, bounded by `timeout` seconds (and a word in the log if no browser opened).

        Raises:
            TimeoutError: nobody completed the sign-in in time.
            SignInFailed: the browser came back without a code.
        """

        async def accept() -> None:
            while not self._arrived.is_set():  # one connection at a time
                await self._handle(await self._listener.accept())
            tg.cancel_scope.cancel()

        async def watch_browser() -> None:
            if browser is not None and await browser.wait():
                logger.warning("no browser could be opened here (no BROWSER, no desktop); open the URL above by "
                               "hand, or run `alloy-mcp-bridge login` in a terminal")

        with anyio.fail_after(timeout):
            async with anyio.create_task_group() as tg:  # both tasks end inside this call
                tg.start_soon(accept)
                tg.start_soon(watch_browser)
        result, error = self._result, self._error
        self._result, self._error, self._arrived = None, None, anyio.Event()
        if result is None:
            raise SignInFailed(error or "no code")
        return result


async def open_browser(url: str) -> anyio.abc.Process | None:
    """Open `url` in the system browser (a child process; never touching stdout); the URL goes to stderr too."""
    print(f"alloy-mcp-bridge: sign in to the MCP server in your browser. If it did not open, visit:\n  {url}",
          file=sys.stderr, flush=True)
    try:
        process = await anyio.open_process([sys.executable, "-c", _OPEN_BROWSER, url], stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=sys.stderr)
    except OSError as exc:
        logger.warning("could not start the browser (%s); open the URL above by hand", type(exc).__name__)
        return None
    return process


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
