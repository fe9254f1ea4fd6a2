"""`config CLIENT` without `--include-secrets`: every secret setting is a placeholder, never its value.

`tests/test_client_config.py` covers `ALLOY_API_KEY`; these cover the other secrets a user may configure:
the access token inside a token URL, `ALLOY_USER_TOKEN`, and the values of `ALLOY_MCP_HEADERS`.
Each runs the bridge's command line as a subprocess, for every client format.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tomllib
from typing import Any

import pytest

from bridge.client_configs import CLIENT_NAMES
from tests.helpers import ACCESS_TOKEN, API_KEY, ROOT, SERVER_ID, USER_ID, USER_TOKEN

BASE = "https://mcp.alloy.example"
HEADER_SECRET = "hdr_TESTSECRET_4e1f7a"

# (secret env var, its environment, the secret, the placeholder outside VS Code)
CASES = {
    "token URL": ("ALLOY_MCP_URL", {"ALLOY_MCP_URL": f"{BASE}/mcp/{SERVER_ID}/{ACCESS_TOKEN}"}, ACCESS_TOKEN,
                  f"{BASE}/mcp/{SERVER_ID}/<ACCESS_TOKEN>"),
    "user token": ("ALLOY_USER_TOKEN", {"ALLOY_MCP_URL": f"{BASE}/mcp/{SERVER_ID}", "ALLOY_API_KEY": API_KEY,
                                        "ALLOY_USER_TOKEN": USER_TOKEN}, USER_TOKEN, "<ALLOY_USER_TOKEN>"),
    "custom headers": ("ALLOY_MCP_HEADERS", {"ALLOY_MCP_URL": f"{BASE}/mcp/{SERVER_ID}", "ALLOY_USER_ID": USER_ID,
                                             "ALLOY_MCP_HEADERS": json.dumps({"X-Team-Key": HEADER_SECRET})},
                       HEADER_SECRET, "<ALLOY_MCP_HEADERS>"),
}


def config(client: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("ALLOY_", "XDG_", "CLAUDE_", "CODEX_", "SSL_CERT_"))
            and not k.upper().endswith("_PROXY")}
    return subprocess.run([sys.executable, "-m", "bridge", "config", client], env={**base, **env},
                          cwd=ROOT / "tests", capture_output=True, text=True, timeout=60, input="")


def entry_env(client: str, stdout: str) -> dict[str, Any]:
    """The env of the printed entry, in whichever format the client reads."""
    if client == "claude-code":
        words = shlex.split(stdout)
        return dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "-e")
    if client == "codex":
        return tomllib.loads(stdout)["mcp_servers"]["alloy"]["env"]
    key = {"vscode": "servers", "zed": "context_servers"}.get(client, "mcpServers")
    return json.loads(stdout)[key]["alloy"]["env"]


@pytest.mark.parametrize("client", CLIENT_NAMES)
@pytest.mark.parametrize("case", list(CASES))
def test_config_prints_a_placeholder_never_the_secret(case, client):
    name, env, secret, stand_in = CASES[case]
    result = config(client, env)
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout + result.stderr
    expected = "${input:" + name.lower().replace("_", "-") + "}" if client == "vscode" else stand_in
    assert entry_env(client, result.stdout)[name] == expected
