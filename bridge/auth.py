"""Authentication flows that change while the bridge runs, as `httpx2.Auth` flows.

Static credentials (API key, user id, a fixed user JWT, extra headers) are plain
headers on the client (`bridge.endpoint`). What lives here is credentials that
rotate: today the user JWT read from a file; OAuth lands here next.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator
from pathlib import Path

import httpx2

from bridge.endpoint import header_value_problem, secret_forms
from bridge.logs import SecretList
from bridge.secret_sources import read_secret_file

logger = logging.getLogger(__name__)


class FileUserToken(httpx2.Auth):
    """`x-alloy-user-token` read from a file: re-read when the file changes, and once after a 401.

    A user JWT expires; whoever refreshes it only has to rewrite the file. Retrying
    after a 401 is safe: the remote refused the request without running it.
    """

    header = "x-alloy-user-token"

    def __init__(self, path: Path, secrets: SecretList) -> None:
        self.path = path
        self.secrets = secrets
        self._token = ""
        self._stamp: tuple[int, int] | None = None

    def current(self, *, force: bool = False) -> str:
        """The token to send: the file's content when it changed (or when `force`d), else the last one."""
        try:
            info = os.stat(self.path)
            stamp = (info.st_mtime_ns, info.st_size)
            if force or stamp != self._stamp:
                token = read_secret_file(self.path)
                self._stamp = stamp
                if token and token != self._token:
                    self.secrets.add(secret_forms([token]))  # hidden before anything can print it
                    problem = header_value_problem(token, secret=True)
                    if problem is not None:
                        logger.warning("ignoring the new ALLOY_USER_TOKEN_FILE content: the token %s", problem)
                    else:
                        if self._token:
                            logger.info("user token file changed; using the new token")
                        self._token = token
        except (OSError, UnicodeDecodeError) as exc:
            logger.warning("cannot read ALLOY_USER_TOKEN_FILE (%s); keeping the last token", type(exc).__name__)
        return self._token

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        sent = self.current()
        request.headers[self.header] = sent
        response = yield request
        if response.status_code == 401:
            fresh = self.current(force=True)
            if fresh != sent:
                request.headers[self.header] = fresh
                yield request
