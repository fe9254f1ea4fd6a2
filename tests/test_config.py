"""Configuration: every bad setting is one readable line naming it, exit code 2, before any network use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.cli import parse_args
from bridge.endpoint import resolve_endpoint
from bridge.settings import BridgeSettings, ConfigError, describe, env_name, flag_name, is_flag, load_settings
from tests.helpers import ROOT

SECRET_KEY = "sk_CONFIGSECRET_a1b2c3"
SECRET_TOKEN = "tok_CONFIGSECRET_d4e5"


def run_bridge(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ALLOY_")}
    return subprocess.run([sys.executable, "-m", "bridge", *args], env={**base, **env}, cwd=cwd or ROOT / "tests",
                          input="", capture_output=True, text=True, timeout=30)


BAD_CONFIGS: list[tuple[str, dict[str, str], str]] = [
    ("nothing set", {}, "ALLOY_MCP_URL"),
    ("empty url", {"ALLOY_MCP_URL": ""}, "ALLOY_MCP_URL"),
    ("url with spaces", {"ALLOY_MCP_URL": "https://exa mple.com/mcp/s"}, "ALLOY_MCP_URL"),
    ("not http", {"ALLOY_MCP_URL": "ftp://example.com/mcp/s"}, "ALLOY_MCP_URL"),
    ("no host", {"ALLOY_MCP_URL": "https:///mcp/s"}, "ALLOY_MCP_URL"),
    ("plain http to a remote host", {"ALLOY_MCP_URL": "http://example.com/mcp/s"}, "ALLOY_MCP_URL"),
    ("credentials in the url", {"ALLOY_MCP_URL": f"https://me:{SECRET_KEY}@example.com/mcp/s"}, "ALLOY_MCP_URL"),
    ("bad port", {"ALLOY_MCP_URL": "https://example.com:99999/mcp/s"}, "ALLOY_MCP_URL"),
    ("url and server id disagree", {"ALLOY_MCP_URL": "https://mcp.runalloy.com/mcp/srv_a",
                                    "ALLOY_SERVER_ID": "srv_b"}, "ALLOY_SERVER_ID"),
    ("token url and token disagree", {"ALLOY_MCP_URL": f"https://mcp.runalloy.com/mcp/srv_a/{SECRET_TOKEN}",
                                      "ALLOY_ACCESS_TOKEN": SECRET_TOKEN + "x"}, "ALLOY_ACCESS_TOKEN"),
    ("token without server id", {"ALLOY_ACCESS_TOKEN": SECRET_TOKEN}, "ALLOY_SERVER_ID"),
    ("server id with a slash", {"ALLOY_SERVER_ID": "a/b"}, "ALLOY_SERVER_ID"),
    ("headers not json", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_MCP_HEADERS": "{nope"},
     "ALLOY_MCP_HEADERS"),
    ("headers not an object", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_MCP_HEADERS": '["a"]'},
     "ALLOY_MCP_HEADERS"),
    ("header injection", {"ALLOY_MCP_URL": "https://x.example/mcp",
                          "ALLOY_MCP_HEADERS": '{"X-A": "v\\r\\nInjected: 1"}'}, "ALLOY_MCP_HEADERS"),
    ("bad header name", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_MCP_HEADERS": '{"Bad Name": "v"}'},
     "ALLOY_MCP_HEADERS"),
    ("reserved header", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_MCP_HEADERS": '{"Mcp-Session-Id": "s"}'},
     "ALLOY_MCP_HEADERS"),
    ("header set twice", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_API_KEY": SECRET_KEY,
                          "ALLOY_MCP_HEADERS": f'{{"Authorization": "Bearer {SECRET_KEY}"}}'}, "ALLOY_MCP_HEADERS"),
    ("api key with a space", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_API_KEY": SECRET_KEY + " 2"},
     "ALLOY_API_KEY"),
    ("api key with a newline", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_API_KEY": SECRET_KEY + "\n"},
     "ALLOY_API_KEY"),
    ("empty api key", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_API_KEY": ""}, "ALLOY_API_KEY"),
    ("jwt with crlf", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_USER_TOKEN": SECRET_TOKEN + "\r\nX: y"},
     "ALLOY_USER_TOKEN"),
    ("user id with crlf", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_USER_ID": "u\r\nX-Evil: 1"},
     "ALLOY_USER_ID"),
    ("timeout not a number", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_CONNECT_TIMEOUT": "soon"},
     "ALLOY_CONNECT_TIMEOUT"),
    ("timeout zero", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_READ_TIMEOUT": "0"}, "ALLOY_READ_TIMEOUT"),
    ("negative retries", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_MAX_RETRIES": "-1"}, "ALLOY_MAX_RETRIES"),
    ("unknown log level", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_LOG_LEVEL": "loud"}, "ALLOY_LOG_LEVEL"),
    ("unknown transport", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_TRANSPORT": "pigeon"},
     "ALLOY_TRANSPORT"),
    ("redirect uri not a url", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_REDIRECT_URI": "somewhere"},
     "ALLOY_REDIRECT_URI"),
    ("missing ca bundle", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_CA_BUNDLE": "/nonexistent/ca.pem"},
     "ALLOY_CA_BUNDLE"),
    ("plain http base url", {"ALLOY_SERVER_ID": "srv", "ALLOY_BASE_URL": "http://example.com"}, "ALLOY_BASE_URL"),
    ("allow_http not a boolean", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_ALLOW_HTTP": "maybe"},
     "ALLOY_ALLOW_HTTP"),
    ("message limit too small", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_MAX_MESSAGE_BYTES": "1000"},
     "ALLOY_MAX_MESSAGE_BYTES"),
    ("token file and token", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_USER_TOKEN": SECRET_TOKEN,
                              "ALLOY_USER_TOKEN_FILE": "/etc/hostname"}, "ALLOY_USER_TOKEN_FILE"),
    ("missing token file", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_USER_TOKEN_FILE": "/no/such/jwt"},
     "ALLOY_USER_TOKEN_FILE"),
    ("empty token file", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_USER_TOKEN_FILE": "/dev/null"},
     "ALLOY_USER_TOKEN_FILE"),
    ("rate limit malformed", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_RATE_LIMIT": "fast"},
     "ALLOY_RATE_LIMIT"),
    ("log file not writable", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_LOG_FILE": "/proc/no/such.log"},
     "ALLOY_LOG_FILE"),
    ("a placeholder config printed", {"ALLOY_MCP_URL": "https://x.example/mcp", "ALLOY_API_KEY": "<ALLOY_API_KEY>"},
     "ALLOY_API_KEY"),
    ("a token URL placeholder", {"ALLOY_MCP_URL": "https://x.example/mcp/srv/<ACCESS_TOKEN>"}, "ALLOY_MCP_URL"),
]


@pytest.mark.parametrize(("case", "env", "setting"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_configuration_exits_2_with_one_line_naming_the_setting(case, env, setting):
    result = run_bridge(env)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert setting in lines[0]
    assert result.stdout == ""
    for secret in (SECRET_KEY, SECRET_TOKEN):
        assert secret not in result.stderr


def test_bad_configuration_never_touches_the_network(remote):
    result = run_bridge({"ALLOY_MCP_URL": remote.url, "ALLOY_MCP_HEADERS": "{broken"})
    assert result.returncode == 2
    assert remote.requests() == []


def test_a_misspelled_variable_is_named_with_the_likely_setting(remote, tmp_path):
    result = run_bridge({"ALLOY_MCP_URL": remote.url, "ALLOY_APIKEY": SECRET_KEY}, cwd=tmp_path)
    assert "ALLOY_APIKEY is not a setting" in result.stderr and "did you mean ALLOY_API_KEY?" in result.stderr
    assert SECRET_KEY not in result.stderr


def test_a_missing_env_file_given_by_flag_is_a_configuration_error():
    result = run_bridge({"ALLOY_MCP_URL": "https://x.example/mcp"}, "--env-file", "/no/such/.env")
    assert result.returncode == 2 and "--env-file" in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_configuration_error_also_lands_in_the_log_file(tmp_path):
    log = tmp_path / "bridge.log"
    result = run_bridge({"ALLOY_MCP_URL": "ftp://nope", "ALLOY_LOG_FILE": str(log)})
    assert result.returncode == 2 and "ALLOY_MCP_URL" in log.read_text()


def test_flag_errors_name_the_flag_too():
    result = run_bridge({}, "--mcp-url", "ftp://nope")
    assert result.returncode == 2 and "--mcp-url" in result.stderr


def test_api_key_without_user_warns_but_runs(remote, tmp_path):
    result = run_bridge({"ALLOY_MCP_URL": remote.url, "ALLOY_API_KEY": SECRET_KEY}, cwd=tmp_path)
    assert result.returncode == 0
    assert "ALLOY_USER_ID" in result.stderr and "WARNING" in result.stderr
    assert SECRET_KEY not in result.stderr


def test_flags_override_environment_and_dotenv(tmp_path):
    (tmp_path / ".env").write_text(f"ALLOY_MCP_URL=https://from-dotenv.example/mcp/a\nALLOY_API_KEY={SECRET_KEY}\n")
    os.environ.pop("ALLOY_MCP_URL", None)
    settings = load_settings({}, env_file=str(tmp_path / ".env"))
    assert settings.mcp_url is not None
    assert settings.mcp_url.get_secret_value() == "https://from-dotenv.example/mcp/a"
    settings = load_settings({"mcp_url": "https://from-flag.example/mcp/b"}, env_file=str(tmp_path / ".env"))
    assert settings.mcp_url is not None
    assert settings.mcp_url.get_secret_value() == "https://from-flag.example/mcp/b"
    assert settings.api_key is not None and settings.api_key.get_secret_value() == SECRET_KEY


def test_environment_beats_dotenv(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("ALLOY_READ_TIMEOUT=5\n")
    monkeypatch.setenv("ALLOY_READ_TIMEOUT", "7")
    assert load_settings({}, env_file=str(tmp_path / ".env")).read_timeout == 7


def test_secrets_never_appear_in_repr():
    settings = BridgeSettings(mcp_url=f"https://mcp.runalloy.com/mcp/srv/{SECRET_TOKEN}", api_key=SECRET_KEY,
                              user_token=SECRET_TOKEN)
    endpoint = resolve_endpoint(settings)
    for text in (repr(settings), str(settings), repr(endpoint)):
        assert SECRET_KEY not in text and SECRET_TOKEN not in text
    assert endpoint.display_url == "https://mcp.runalloy.com/mcp/srv/***"
    assert SECRET_TOKEN in endpoint.secrets and SECRET_KEY in endpoint.secrets


def test_server_id_builds_the_alloy_urls():
    plain = resolve_endpoint(BridgeSettings(server_id="srv_1", api_key=SECRET_KEY, user_id="u"))
    token = resolve_endpoint(BridgeSettings(server_id="srv_1", access_token=SECRET_TOKEN))
    assert plain.url == "https://mcp.runalloy.com/mcp/srv_1"
    assert plain.headers["authorization"] == f"Bearer {SECRET_KEY}" and plain.headers["x-alloy-userid"] == "u"
    assert token.url == f"https://mcp.runalloy.com/mcp/srv_1/{SECRET_TOKEN}"
    assert "authorization" not in token.headers


def test_matching_url_and_server_id_are_accepted():
    endpoint = resolve_endpoint(BridgeSettings(mcp_url="https://mcp.runalloy.com/mcp/srv_1", server_id="srv_1",
                                               api_key=SECRET_KEY, user_id="u"))
    assert endpoint.url == "https://mcp.runalloy.com/mcp/srv_1"


def test_alloy_url_without_credentials_warns():
    endpoint = resolve_endpoint(BridgeSettings(mcp_url="https://mcp.runalloy.com/mcp/srv_1"))
    assert any("401" in w for w in endpoint.warnings)


def test_plain_http_to_a_remote_host_is_allowed_when_asked():
    endpoint = resolve_endpoint(BridgeSettings(mcp_url="http://intranet.example/mcp", allow_http=True))
    assert endpoint.url == "http://intranet.example/mcp"


def test_config_error_message_names_env_var_and_flag():
    with pytest.raises(ConfigError) as caught:
        resolve_endpoint(BridgeSettings())
    assert str(caught.value).startswith("ALLOY_MCP_URL (--mcp-url): ")


def test_readme_configuration_table_is_the_settings_model():
    """One table of settings: README's rows are the model's fields, descriptions and defaults, in order."""
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `ALLOY_")]
    expected = []
    for name in BridgeSettings.model_fields:
        description, shown_default, _ = describe(name)
        assert description, name
        expected.append(f"| `{env_name(name)}` | `{flag_name(name)}` | {_shown(shown_default)} | {description} |")
    assert rows == expected


def _shown(default: str) -> str:
    return default if default in ("—", "off", "system store", "your config dir") else f"`{default}`"


def test_every_setting_is_a_cli_flag():
    for name in BridgeSettings.model_fields:
        value = [] if is_flag(name) else ["x"]
        _, overrides, _ = parse_args([flag_name(name), *value])
        assert name in overrides


def test_cli_flags_become_overrides():
    command, overrides, env_file = parse_args(["--mcp-url", "https://a.example/mcp", "--allow-http",
                                               "--read-timeout", "9"])
    assert command == "run"
    assert overrides == {"mcp_url": "https://a.example/mcp", "allow_http": True, "read_timeout": "9"}
    assert env_file == ".env"


def test_rate_limit_forms():
    from bridge.pacing import parse_rate_limit

    assert parse_rate_limit("100/min") == (100, 60.0)
    assert parse_rate_limit("5/2s") == (5, 2.0)
    assert parse_rate_limit("600/hour") == (600, 3600.0)
    assert parse_rate_limit("0/min") is None and parse_rate_limit("5/") is None


def test_version_flag():
    result = run_bridge({}, "--version")
    assert result.returncode == 0 and result.stdout.startswith("alloy-mcp-bridge ")
