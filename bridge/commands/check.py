"""`alloy-mcp-bridge check`: try the configuration against the remote and say what happened.

It runs the same stack as the bridge (settings, HTTP client, transport
selection, retries) without a desktop: `initialize`, `notifications/initialized`,
`tools/list` (all pages), then ends the session. Output goes to stderr, one
line per step; the exit code is 0 when everything worked, 1 otherwise, 2 for a
configuration error.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import anyio

from bridge import __version__
from bridge.endpoint import Endpoint
from bridge.errors import BridgeError, RemoteFailure
from bridge.http import remote_http
from bridge.inflight import InFlightTable, Pending
from bridge.logs import SecretList, configure_logging
from bridge.messages import Kind, Message, build_notification, build_request
from bridge.settings import BridgeSettings
from bridge.transports import Upstream, make_upstream

_PROTOCOL_VERSION = "2025-11-25"


class _Collector:
    """A `Sink` that keeps answers for the check instead of writing them to stdout."""

    def __init__(self) -> None:
        self.inflight = InFlightTable()
        self.answers: dict[Any, Message | RemoteFailure] = {}
        self.arrived = anyio.Event()

    async def deliver(self, message: Message) -> None:
        if message.is_answer and message.id is not None and self.inflight.answer(message.id) is not None:
            self.answers[message.id] = message
            self.arrived.set()

    async def fail(self, pending: Pending, failure: RemoteFailure) -> None:
        if self.inflight.settle(pending):
            self.answers[pending.id] = failure
            self.arrived.set()

    def is_open(self, pending: Pending) -> bool:
        return self.inflight.get(pending.id) is pending

    async def ask(self, upstream: Upstream, message: Message) -> dict[str, Any]:
        pending = Pending(message)
        self.inflight.add(pending)
        upstream.send(message, pending)
        while pending.id not in self.answers:
            arrived = self.arrived = anyio.Event()
            await arrived.wait()
        answer = self.answers.pop(pending.id)
        if isinstance(answer, RemoteFailure):
            error = answer.error_object()
            raise BridgeError(int(error.get("code", 0)), str(error.get("message")),
                              hint=(error.get("data") or {}).get("hint"))
        if answer.kind is Kind.ERROR:
            raise BridgeError(int(answer.error.get("code", 0)), str(answer.error.get("message")), hint="")
        result = answer.result
        return result if isinstance(result, dict) else {}


def _say(text: str, secrets: SecretList) -> None:
    """One line of the report on stderr; whatever the remote said in it is redacted like a log line."""
    print(secrets.redact(text), file=sys.stderr, flush=True)


async def _check(settings: BridgeSettings, endpoint: Endpoint, secrets: SecretList) -> bool:
    collector = _Collector()

    def say(text: str) -> None:
        _say(text, secrets)

    async with remote_http(settings, endpoint, secrets) as http:
        upstream = make_upstream(settings.transport, http, collector)
        async with anyio.create_task_group() as tg:
            await tg.start(upstream.run)
            try:
                started = time.perf_counter()
                result = await collector.ask(upstream, build_request("check-1", "initialize", {
                    "protocolVersion": _PROTOCOL_VERSION, "capabilities": {},
                    "clientInfo": {"name": "alloy-mcp-bridge-check", "version": __version__},
                }))
                info = result.get("serverInfo") or {}
                say(f"ok   initialize: {info.get('name', '?')} {info.get('version', '')} speaks protocol "
                     f"{result.get('protocolVersion')} ({(time.perf_counter() - started) * 1000:.0f} ms)")
                upstream.send(build_notification("notifications/initialized"), None)
                names: list[str] = []
                cursor = None
                for page in range(1, 101):
                    params: dict[str, Any] = {"cursor": cursor} if cursor else {}
                    listed = await collector.ask(upstream, build_request(f"check-list-{page}", "tools/list", params))
                    names += [str(t.get("name")) for t in listed.get("tools", []) if isinstance(t, dict)]
                    cursor = listed.get("nextCursor")
                    if not cursor:
                        break
                shown = ", ".join(names[:10]) + (f", … (+{len(names) - 10})" if len(names) > 10 else "")
                say(f"ok   tools/list: {len(names)} tool(s){': ' + shown if names else ''}")
                return True
            except BridgeError as error:
                say(f"FAIL {error.message}")
                hint = error.hint
                if hint:
                    say(f"     {hint}")
                return False
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await upstream.aclose()
                tg.cancel_scope.cancel()
    return False  # not reached: every path above returns


def check(overrides: dict[str, Any], env_file: str | None = ".env") -> int:
    """Run the check; 0 when the remote answered `initialize` and `tools/list`."""
    from bridge.commands.run import load_configuration

    settings, endpoint = load_configuration(overrides, env_file)
    secrets = SecretList(endpoint.secrets)
    configure_logging("warning" if settings.log_level == "info" else settings.log_level, settings.log_file, secrets)
    _say(f"alloy-mcp-bridge {__version__} check: {endpoint.display_url}", secrets)
    for warning in endpoint.warnings:
        _say(f"warn {warning}", secrets)
    ok = anyio.run(_check, settings, endpoint, secrets)
    _say("All good: a desktop client configured like this will work." if ok else "The check failed.", secrets)
    return 0 if ok else 1
