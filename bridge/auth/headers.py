"""Credentials that change while the bridge runs, applied to each request by one `httpx2.Auth` flow.

Static credentials (an API key, a user id, a fixed user JWT, extra headers) are
plain headers on the client (`bridge.endpoint`). What lives here rotates:

- `FileHeader`: the user JWT in `ALLOY_USER_TOKEN_FILE`, re-read when the file changes;
- `CommandHeader`: the API key or user JWT printed by `ALLOY_API_KEY_COMMAND` /
  `ALLOY_USER_TOKEN_COMMAND`, run again shortly before a JWT's `exp`.

After a 401 every source is asked for a fresh value once, and the request is
sent again if one changed: safe, since the remote refused it without running
it. A command that fails then ends the request with the 401 error and the
command's failure in the hint. OAuth lands here next.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Protocol

import anyio
import httpx2

from bridge.endpoint import header_value_problem
from bridge.errors import BridgeError, BridgeErrorCode
from bridge.logs import SecretList
from bridge.secret_sources import SecretCommandError, jwt_expiry, read_secret_file, run_secret_command
from bridge.settings import env_name

logger = logging.getLogger(__name__)

REFRESH_MARGIN = 60.0  # seconds before a JWT's `exp` at which its command is run again


class HeaderSource(Protocol):
    header: str

    async def value(self, *, force: bool = False) -> str:
        """The header's value now; `force` after a 401 (raises `BridgeError` when no fresh value can be had)."""


class FileHeader:
    """A header read from a file: re-read when the file changes, and when forced."""

    def __init__(self, header: str, path: Path, secrets: SecretList, setting: str = "user_token_file") -> None:
        self.header = header
        self.path = path
        self.secrets = secrets
        self.setting = setting
        self._token = ""
        self._stamp: tuple[int, int] | None = None

    def current(self, *, force: bool = False) -> str:
        try:
            info = os.stat(self.path)
            stamp = (info.st_mtime_ns, info.st_size)
            if force or stamp != self._stamp:
                token = read_secret_file(self.path)
                self._stamp = stamp
                if token and token != self._token:
                    self.secrets.add([token])  # hidden before anything can print it
                    problem = header_value_problem(token, secret=True)
                    if problem is not None:
                        logger.warning("ignoring the new %s content: the token %s", env_name(self.setting), problem)
                    else:
                        if self._token:
                            logger.info("%s changed; using the new token", env_name(self.setting))
                        self._token = token
        except (OSError, UnicodeDecodeError) as exc:
            logger.warning("cannot read %s (%s); keeping the last token", env_name(self.setting), type(exc).__name__)
        return self._token

    async def value(self, *, force: bool = False) -> str:
        return self.current(force=force)


class CommandHeader:
    """A header whose value a command prints: run again before a JWT expires, and when forced."""

    def __init__(self, header: str, setting: str, command: str, initial: str, secrets: SecretList,
                 prefix: str = "") -> None:
        self.header = header
        self.setting = setting
        self.command = command
        self.prefix = prefix
        self.secrets = secrets
        self._value = initial
        self._expires_at = jwt_expiry(initial)  # decoded once per value, not per request
        self._lock = anyio.Lock()
        self._ran_at = 0.0  # (it ran at start, in `resolve_secrets`; an expiring result is renewed once)
        secrets.add([initial])

    async def value(self, *, force: bool = False) -> str:
        if force or self._expiring():
            asked = time.monotonic()
            async with self._lock:
                # Concurrent 401s share one run; a JWT shorter-lived than the margin is renewed at most every few
                # seconds, not on every request.
                if (force and self._ran_at < asked) or (self._expiring() and time.monotonic() - self._ran_at > 5):
                    await self._refresh(required=force)
        return self.prefix + self._value

    def _expiring(self) -> bool:
        return self._expires_at is not None and self._expires_at - time.time() < REFRESH_MARGIN

    async def _refresh(self, *, required: bool) -> None:
        self._ran_at = time.monotonic()
        try:
            fresh = await anyio.to_thread.run_sync(run_secret_command, self.command)
        except SecretCommandError as exc:
            failure = f"{env_name(self.setting)}: the command {self.secrets.redact(str(exc))}"
            if required:
                raise BridgeError(
                    BridgeErrorCode.AUTH_REJECTED,
                    "The remote rejected the credentials (HTTP 401) and they could not be renewed.",
                    http_status=401, hint=f"{failure}. Fix the command (try it in a terminal) and retry.",
                ) from None
            logger.warning("could not renew a credential before it expires: %s", failure)
            return
        self.secrets.add([fresh])
        problem = header_value_problem(fresh, secret=True)
        if problem is not None:
            logger.warning("ignoring the output of %s: it %s", env_name(self.setting), problem)
            return
        if fresh != self._value:
            logger.info("%s gave a new credential", env_name(self.setting))
        self._value = fresh
        self._expires_at = jwt_expiry(fresh)


class RotatingHeaders(httpx2.Auth):
    """Applies every rotating header to each request; after a 401, fresh values and one more try."""

    def __init__(self, sources: Sequence[HeaderSource]) -> None:
        self.sources = list(sources)

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        sent: dict[str, str] = {}
        for source in self.sources:
            sent[source.header] = request.headers[source.header] = await source.value()
        response = yield request
        if response.status_code != 401:
            return
        changed = False
        for source in self.sources:
            fresh = await source.value(force=True)
            if fresh != sent[source.header]:
                request.headers[source.header] = fresh
                changed = True
        if changed:
            yield request
