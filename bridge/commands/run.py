"""`alloy-mcp-bridge` (run): serve the desktop on stdio, relaying to the configured remote."""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from bridge import __version__
from bridge.endpoint import Endpoint, resolve_endpoint
from bridge.http import remote_http
from bridge.http_client import check_network_settings
from bridge.logs import SecretList, configure_logging, create_log_file
from bridge.policy import ToolPolicy
from bridge.relay import Relay
from bridge.settings import (
    BridgeSettings,
    ConfigError,
    load_settings,
    overrides_from,
    resolve_secrets,
    unknown_variables,
)
from bridge.stats import SessionStats
from bridge.stdio import StdioChannel
from bridge.transports import Sink, Upstream, make_upstream

logger = logging.getLogger(__name__)

EXIT_CONFIG = 2


def load_configuration(overrides: dict[str, Any], env_file: str | None, drop: tuple[str, ...] = (),
                       *, resolve: bool = True, on_error: Callable[[str], None] | None = None,
                       endpoint_of: Callable[[BridgeSettings], Endpoint] = resolve_endpoint,
                       ) -> tuple[BridgeSettings, Endpoint]:
    """Settings and endpoint, or a one-line error on stderr and exit code 2 (before any network use).

    The settings come back with secrets from files and commands resolved into their fields, unless not
    `resolve` (`config` writes the settings as given, and runs no secret command). `drop` unsets settings
    whatever their source (`servers connect` replaces the endpoint). `on_error` also hears the error line
    (`check --json` puts it in its document). `endpoint_of` builds the endpoint (`servers`: the management API).
    """
    line = ""
    try:
        given = load_settings(overrides, env_file=env_file)
        if drop:
            given = given.model_copy(update=dict.fromkeys(drop))
        settings = resolve_secrets(given, run_commands=resolve)
        endpoint = endpoint_of(settings)
        if not resolve:
            settings = given
        check_network_settings(settings)
        if settings.log_file is not None:
            create_log_file(settings.log_file)
    except ConfigError as exc:
        line = f"alloy-mcp-bridge: configuration error: {exc}"
        _report_config_error(line, overrides)
    except OSError as exc:
        line = ("alloy-mcp-bridge: configuration error: ALLOY_LOG_FILE (--log-file): cannot open the file for "
                f"writing ({exc.strerror or type(exc).__name__})")
        _report_config_error(line, {})
    if line:
        if on_error is not None:
            on_error(line)
        raise SystemExit(EXIT_CONFIG)
    return settings, endpoint


def _report_config_error(line: str, overrides: dict[str, Any]) -> None:
    """One line on stderr — and in ALLOY_LOG_FILE when one is set, since that is where a user looks when a
    desktop client only says "connection closed"."""
    print(line, file=sys.stderr)
    path = overrides.get("log_file") or os.environ.get("ALLOY_LOG_FILE")
    if path:
        with contextlib.suppress(OSError):
            create_log_file(Path(path))
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ERROR [{os.getpid()}] bridge: {line}\n")


def main(args: argparse.Namespace) -> int:
    """`alloy-mcp-bridge [run]`."""
    return run(overrides_from(args), args.env_file or None)


def run(overrides: dict[str, Any], env_file: str | None = ".env") -> int:
    """Run the bridge until the desktop disconnects; returns the exit code."""
    settings, endpoint = load_configuration(overrides, env_file)
    secrets = SecretList(endpoint.secrets)
    configure_logging(settings.log_level, settings.log_file, secrets, settings.log_max_bytes, settings.log_backups)
    for warning in [*endpoint.warnings, *unknown_variables(dict(os.environ))]:
        logger.warning(warning)
    logger.info("alloy-mcp-bridge %s: relaying stdio to %s", __version__, endpoint.display_url)
    # Everything imported so far lives for the whole process: keep it out of the garbage collector's
    # scans, so collections stay short and do not show up as latency spikes.
    gc.collect()
    gc.freeze()
    anyio.run(serve, settings, endpoint, secrets, backend_options=event_loop_options())
    logger.info("stopped")
    return 0


def event_loop_options() -> dict[str, Any]:
    """uvloop where it is installed (not on Windows): measured, it takes ~0.2 ms of CPU off every relayed call."""
    return {"use_uvloop": importlib.util.find_spec("uvloop") is not None}


async def serve(settings: BridgeSettings, endpoint: Endpoint, secrets: SecretList) -> None:
    """Wire stdio, the HTTP client, the upstream and the relay together, and run them."""
    stats = SessionStats()
    async with remote_http(settings, endpoint, secrets, stats) as http:

        def make(sink: Sink) -> Upstream:
            return make_upstream(settings.transport, http, sink)

        channel = StdioChannel(settings.max_message_bytes)
        async with channel.open():
            policy = ToolPolicy.from_settings(settings.allowed_tools, settings.blocked_tools, settings.read_only)
            relay = Relay(channel, make, policy, secrets, stats, trace=settings.trace)
            await relay.run()
