"""OAuth 2.1 remotes, end to end: the bridge as a subprocess, an SDK-built authorization server on 127.0.0.1,
and a stand-in browser (through `BROWSER`) that approves like a user clicking "Allow"."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.helpers import AUTH_REJECTED, ROOT, bridge_env, connect_error, open_bridge, text_of

pytestmark = pytest.mark.anyio


class OAuthRemote:
    def __init__(self, ttl: int = 3600) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "tests.oauth_server", "--ttl", str(ttl)], cwd=ROOT,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("PORT "), line
        self.base = f"http://127.0.0.1:{int(line.split()[1])}"
        self.url = self.base + "/mcp"

    def control(self, command: str = "state", **payload: Any) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.base}/_control/{command}", data=json.dumps(payload).encode(),
                                         method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback test server
            return json.loads(response.read())

    @property
    def counts(self) -> dict[str, int]:
        return self.control()["counts"]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def oauth_remote() -> Iterator[OAuthRemote]:
    remote = OAuthRemote()
    try:
        yield remote
    finally:
        remote.stop()


@pytest.fixture
def short_lived_remote() -> Iterator[OAuthRemote]:
    remote = OAuthRemote(ttl=2)
    try:
        yield remote
    finally:
        remote.stop()


def oauth_env(remote: OAuthRemote, tmp_path: Path, **extra: str) -> dict[str, str]:
    return bridge_env(None, ALLOY_MCP_URL=remote.url, ALLOY_OAUTH_DIR=str(tmp_path / "tokens"),
                      BROWSER=f"{sys.executable} {ROOT / 'tests' / 'fake_browser.py'} %s",
                      FAKE_BROWSER_LOG=str(tmp_path / "browser.txt"), PATH=os.environ["PATH"], **extra)


def browser_openings(tmp_path: Path) -> int:
    log = tmp_path / "browser.txt"
    return len(log.read_text().splitlines()) if log.exists() else 0


def no_token_in(remote: OAuthRemote, *texts: str) -> None:
    issued = remote.control()["issued"]
    assert issued, "the remote issued no token"
    for token in issued:
        for text in texts:
            assert token not in text


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ALLOY_")}
    return subprocess.run([sys.executable, "-m", "bridge", *args], env={**base, **env}, capture_output=True,
                          text=True, timeout=90, input="", cwd=ROOT / "tests")


async def test_first_use_signs_in_once_in_the_browser_and_stores_the_tokens_privately(oauth_remote, tmp_path):
    async with open_bridge(tmp_path, oauth_env(oauth_remote, tmp_path)) as (client, run):
        assert "echo" in {tool.name for tool in (await client.list_tools()).tools}
        assert text_of(await client.call_tool("echo", {"text": "signed in"})) == "signed in"
    assert browser_openings(tmp_path) == 1
    counts = oauth_remote.counts
    assert counts["register"] == 1 and counts["authorize"] == 1 and counts["code"] == 1
    (token_file,) = (tmp_path / "tokens").rglob("oauth.json")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    assert "http://127.0.0.1" in run.stderr and "/authorize" in run.stderr  # the URL is always printed too
    authorize = next(r for r in oauth_remote.control()["requests"] if r["path"] == "/authorize")["query"]
    assert authorize["code_challenge_method"] == ["S256"] and authorize["resource"] == [oauth_remote.url]
    assert authorize["state"] and authorize["redirect_uri"][0].startswith("http://127.0.0.1:")
    no_token_in(oauth_remote, run.stderr, token_file.parent.parent.name)


async def test_tokens_are_reused_across_starts(oauth_remote, tmp_path):
    for text in ("first start", "second start"):
        async with open_bridge(tmp_path, oauth_env(oauth_remote, tmp_path)) as (client, run):
            assert text_of(await client.call_tool("echo", {"text": text})) == text
    assert browser_openings(tmp_path) == 1 and oauth_remote.counts["authorize"] == 1
    no_token_in(oauth_remote, run.stderr)


async def test_an_expired_token_is_refreshed_without_the_browser(short_lived_remote, tmp_path):
    async with open_bridge(tmp_path, oauth_env(short_lived_remote, tmp_path)) as (client, _):
        await client.call_tool("echo", {"text": "one"})
    await anyio.sleep(2.5)  # the access token (2 s) has expired while no bridge ran
    async with open_bridge(tmp_path, oauth_env(short_lived_remote, tmp_path)) as (client, run):
        assert text_of(await client.call_tool("echo", {"text": "after expiry"})) == "after expiry"
    counts = short_lived_remote.counts
    assert counts["refresh"] >= 1 and counts["authorize"] == 1 and browser_openings(tmp_path) == 1
    no_token_in(short_lived_remote, run.stderr)


async def test_a_revoked_grant_starts_a_new_sign_in_instead_of_failing(oauth_remote, tmp_path):
    async with open_bridge(tmp_path, oauth_env(oauth_remote, tmp_path)) as (client, run):
        assert text_of(await client.call_tool("echo", {"text": "before"})) == "before"
        oauth_remote.control("revoke")
        assert text_of(await client.call_tool("echo", {"text": "after revocation"})) == "after revocation"
    counts = oauth_remote.counts
    assert counts["authorize"] == 2 and browser_openings(tmp_path) == 2
    no_token_in(oauth_remote, run.stderr)


async def test_a_revoked_access_token_is_refreshed_first(oauth_remote, tmp_path):
    async with open_bridge(tmp_path, oauth_env(oauth_remote, tmp_path)) as (client, _):
        await client.call_tool("echo", {"text": "before"})
        oauth_remote.control("revoke_access")
        assert text_of(await client.call_tool("echo", {"text": "refreshed"})) == "refreshed"
    counts = oauth_remote.counts
    assert counts["refresh"] == 1 and counts["authorize"] == 1 and browser_openings(tmp_path) == 1


async def test_three_copies_started_at_once_open_the_browser_once(oauth_remote, tmp_path):
    answers: list[str] = []

    async def one_copy(index: int) -> None:
        folder = tmp_path / f"copy{index}"
        folder.mkdir()
        env = {**oauth_env(oauth_remote, tmp_path)}
        async with open_bridge(folder, env) as (client, _):
            answers.append(text_of(await client.call_tool("echo", {"text": f"copy {index}"})))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for index in range(3):
                tg.start_soon(one_copy, index)
    assert sorted(answers) == ["copy 0", "copy 1", "copy 2"]
    assert browser_openings(tmp_path) == 1
    assert oauth_remote.counts["register"] == 1 and oauth_remote.counts["authorize"] == 1


async def test_login_signs_in_from_a_terminal_and_logout_forgets(oauth_remote, tmp_path):
    env = oauth_env(oauth_remote, tmp_path)
    login = cli(env, "login")
    assert login.returncode == 0, login.stderr
    assert "Signed in to" in login.stderr and browser_openings(tmp_path) == 1
    async with open_bridge(tmp_path, env) as (client, _):
        await client.call_tool("echo", {"text": "no browser needed"})
    assert browser_openings(tmp_path) == 1
    report = json.loads(cli(env, "check", "--json").stdout)
    assert report["ok"] and report["oauth"]["inUse"] is True
    assert report["oauth"]["accessTokenExpiresAt"] > time.time()
    logout = cli(env, "logout")
    assert logout.returncode == 0 and "Forgot" in logout.stderr
    assert not list((tmp_path / "tokens").rglob("oauth.json"))
    assert cli(env, "login").returncode == 0 and browser_openings(tmp_path) == 2
    no_token_in(oauth_remote, login.stdout + login.stderr, logout.stderr)


async def test_with_oauth_off_the_401_is_reported(oauth_remote, tmp_path):
    error = await connect_error(tmp_path, oauth_env(oauth_remote, tmp_path, ALLOY_OAUTH="off"))
    assert error.code == AUTH_REJECTED and browser_openings(tmp_path) == 0


async def test_a_sign_in_nobody_completes_ends_with_a_clear_error(oauth_remote, tmp_path):
    env = oauth_env(oauth_remote, tmp_path, ALLOY_OAUTH_TIMEOUT="5", FAKE_BROWSER_MODE="ignore",
                    ALLOY_READ_TIMEOUT="30")
    started = time.monotonic()
    error = await connect_error(tmp_path, env)
    assert error.code == AUTH_REJECTED and "ALLOY_OAUTH_TIMEOUT" in error.message
    assert "login" in str(error.data)
    assert time.monotonic() - started < 20 and browser_openings(tmp_path) == 1


def test_api_key_users_never_load_the_sdk_or_the_oauth_flow():
    code = ("import sys, bridge.cli, bridge.commands.run, bridge.http, bridge.relay, bridge.transports;"
            "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith(('mcp.', 'bridge.auth.oauth'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


async def test_oauth_is_refused_together_with_an_api_key(oauth_remote, tmp_path):
    result = cli({"ALLOY_MCP_URL": oauth_remote.url, "ALLOY_OAUTH": "on", "ALLOY_API_KEY": "k_abc_123"})
    assert result.returncode == 2 and "ALLOY_OAUTH" in result.stderr




async def test_a_url_with_a_query_string_still_signs_in_with_oauth(oauth_remote, tmp_path):
    env = oauth_env(oauth_remote, tmp_path)
    env["ALLOY_MCP_URL"] = oauth_remote.url + "?team=alpha"
    async with open_bridge(tmp_path, env) as (client, run):
        assert text_of(await client.call_tool("echo", {"text": "with a query"})) == "with a query"
    assert browser_openings(tmp_path) == 1
    no_token_in(oauth_remote, run.stderr)
