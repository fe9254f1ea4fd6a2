"""Fixtures only (helpers live in `tests/helpers.py`): the shared test remotes, and the secret scan.

After each test, every bridge stderr file the helpers wrote (and any log file the
test used) is scanned for every secret the tests use. One hit fails the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import SECRETS, RemoteServer, running_remote, stderr_files


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def shared_remote() -> Iterator[RemoteServer]:
    with running_remote() as server:
        yield server


@pytest.fixture
def remote(shared_remote: RemoteServer) -> RemoteServer:
    """The shared test server, with rules and counters reset for this test."""
    shared_remote.reset()
    return shared_remote


@pytest.fixture(scope="session")
def modern_remote() -> Iterator[RemoteServer]:
    """A test server that serves only the 2026-07-28 revision (refuses `initialize` with -32022)."""
    with running_remote("--modern-only") as server:
        yield server


@pytest.fixture
def modern(modern_remote: RemoteServer) -> RemoteServer:
    """The modern-only test server, with rules and counters reset for this test."""
    modern_remote.reset()
    return modern_remote


@pytest.fixture(autouse=True)
def no_secret_in_bridge_output(tmp_path: Path) -> Iterator[None]:
    """After each test: no secret in any bridge stderr or log file the test produced."""
    start = len(stderr_files)
    yield
    files = stderr_files[start:] + sorted(tmp_path.glob("**/*.log"))
    for path in files:
        if not path.exists():
            continue
        text = path.read_text(errors="replace")
        for secret in SECRETS:
            assert secret not in text, f"secret leaked into {path.name}"
