"""`alloy-mcp-bridge check`: try the configuration against the remote and say what happened.

It runs the same stack as the bridge (settings, HTTP client, transport
selection, retries) without a desktop: `initialize`, `notifications/initialized`,
`tools/list`, `resources/list` and `prompts/list` (all pages, each when the
server offers it), then ends the session. By default the report is one line per
step on stderr; `--json` prints one JSON document on stdout instead. Exit code
0 when everything worked, 1 otherwise, 2 for a configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from bridge import __version__
from bridge.endpoint import Endpoint
from bridge.errors import BridgeError, RemoteFailure
from bridge.http import remote_http
from bridge.inflight import InFlightTable, Pending
from bridge.logs import SecretList, configure_logging
from bridge.messages import Kind, Message, build_notification, build_request
from bridge.policy import ToolPolicy
from bridge.settings import BridgeSettings, overrides_from
from bridge.transports import Upstream, make_upstream

_PROTOCOL_VERSION = "2025-11-25"
_MAX_PAGES = 100


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


@dataclass
class Report:
    """What the check found; printed as lines or as one JSON document."""

    url: str
    auth_headers: list[str]
    tool_policy: dict[str, Any]
    ok: bool = False
    transport: str | None = None
    server: dict[str, Any] = field(default_factory=dict)
    protocol_version: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    round_trip_ms: dict[str, float] = field(default_factory=dict)
    hidden_tools: int = 0
    hidden_by_rule: dict[str, int] = field(default_factory=dict)
    tools: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failure: dict[str, Any] | None = None
    oauth: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "url": self.url, "transport": self.transport, "server": self.server or None,
            "protocolVersion": self.protocol_version, "counts": self.counts, "roundTripMs": self.round_trip_ms,
            "authHeaders": self.auth_headers,
            "toolPolicy": {**self.tool_policy, "hiddenTools": self.hidden_tools, "hiddenByRule": self.hidden_by_rule},
            "warnings": self.warnings, "failure": self.failure,
            "oauth": self.oauth or {"inUse": False},
        }


async def _paged(collector: _Collector, upstream: Upstream, method: str, key: str,
                 report: Report) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    started = time.perf_counter()
    for page in range(1, _MAX_PAGES + 1):
        params: dict[str, Any] = {"cursor": cursor} if cursor else {}
        listed = await collector.ask(upstream, build_request(f"check-{method}-{page}", method, params))
        found = listed.get(key)
        items += [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []
        cursor = listed.get("nextCursor")
        if not isinstance(cursor, str) or not cursor:
            break
    report.round_trip_ms[method] = round((time.perf_counter() - started) * 1000, 1)
    return items


async def _check(settings: BridgeSettings, endpoint: Endpoint, secrets: SecretList, report: Report,
                 policy: ToolPolicy) -> None:
    collector = _Collector()
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
                report.round_trip_ms["initialize"] = round((time.perf_counter() - started) * 1000, 1)
                report.transport = getattr(upstream, "transport_name", None)
                info = result.get("serverInfo")
                report.server = {k: str(v) for k, v in info.items() if k in ("name", "version", "title")} \
                    if isinstance(info, dict) else {}
                version = result.get("protocolVersion")
                report.protocol_version = version if isinstance(version, str) else None
                offered = result.get("capabilities")
                capabilities: dict[str, Any] = offered if isinstance(offered, dict) else {}
                upstream.send(build_notification("notifications/initialized"), None)
                tools = await _paged(collector, upstream, "tools/list", "tools", report)
                visible = [str(tool.get("name")) for tool in tools
                           if policy.refusal(str(tool.get("name")), tool) is None]
                report.hidden_by_rule = policy.hidden_by_rule(tools)
                report.tools, report.hidden_tools = visible, len(tools) - len(visible)
                report.counts["tools"] = len(visible)
                if "resources" in capabilities:
                    report.counts["resources"] = len(await _paged(collector, upstream, "resources/list",
                                                                  "resources", report))
                if "prompts" in capabilities:
                    report.counts["prompts"] = len(await _paged(collector, upstream, "prompts/list", "prompts",
                                                                report))
                report.ok = True
            except BridgeError as error:
                report.failure = {"code": error.code, "cause": secrets.redact(error.message),
                                  "fix": secrets.redact(error.hint or "")}
            finally:
                report.oauth = http.auth.status()
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await upstream.aclose()
                tg.cancel_scope.cancel()


def _print_lines(report: Report, secrets: SecretList) -> None:
    def say(text: str) -> None:
        print(secrets.redact(text), file=sys.stderr, flush=True)

    say(f"alloy-mcp-bridge {__version__} check: {report.url}")
    for warning in report.warnings:
        say(f"warn {warning}")
    if report.server or report.protocol_version:
        say(f"ok   initialize: {report.server.get('name', '?')} {report.server.get('version', '')} speaks protocol "
            f"{report.protocol_version} over {report.transport} ({report.round_trip_ms.get('initialize', 0):.0f} ms)")
    if "tools" in report.counts:
        shown = ", ".join(report.tools[:10]) + (f", … (+{len(report.tools) - 10})" if len(report.tools) > 10 else "")
        rules = {"allowed": "ALLOY_ALLOWED_TOOLS", "blocked": "ALLOY_BLOCKED_TOOLS", "read_only": "ALLOY_READ_ONLY"}
        by_rule = ", ".join(f"{count} by {rules[rule]}" for rule, count in report.hidden_by_rule.items() if count)
        hidden = f" ({report.hidden_tools} hidden: {by_rule})" if report.hidden_tools else ""
        say(f"ok   tools/list: {report.counts['tools']} tool(s){hidden}{': ' + shown if shown else ''}")
    for kind in ("resources", "prompts"):
        if kind in report.counts:
            say(f"ok   {kind}/list: {report.counts[kind]} {kind}")
    if report.auth_headers:
        say(f"     auth headers sent: {', '.join(report.auth_headers)}")
    if report.oauth:
        expires = report.oauth.get("accessTokenExpiresAt")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(expires)) if expires else "unknown"
        say(f"     OAuth in use: the access token expires {when} (refreshed as needed)")
    if report.failure is not None:
        say(f"FAIL {report.failure['cause']}")
        if report.failure["fix"]:
            say(f"     {report.failure['fix']}")
    say("All good: a desktop client configured like this will work." if report.ok else "The check failed.")


def main(args: argparse.Namespace) -> int:
    """`alloy-mcp-bridge check [--json]`."""
    return check(overrides_from(args), args.env_file or None, as_json=args.json)


def check(overrides: dict[str, Any], env_file: str | None = ".env", *, as_json: bool = False) -> int:
    """Run the check; 0 when the remote answered `initialize` and every listing."""
    from bridge.commands.run import load_configuration

    def as_document(line: str) -> None:
        if as_json:
            print(json.dumps({"ok": False, "failure": {"code": None, "cause": line.removeprefix("alloy-mcp-bridge: "),
                                                       "fix": "Fix the setting the line names."}}))

    settings, endpoint = load_configuration(overrides, env_file, on_error=as_document)
    secrets = SecretList(endpoint.secrets)
    configure_logging("warning" if settings.log_level == "info" else settings.log_level, settings.log_file, secrets)
    headers = sorted(endpoint.headers)
    if settings.user_token_file is not None:
        headers = sorted({*headers, "x-alloy-user-token"})
    policy = ToolPolicy.from_settings(settings.allowed_tools, settings.blocked_tools, settings.read_only)
    report = Report(url=endpoint.display_url, auth_headers=headers,
                    tool_policy={"allowed": list(policy.allowed), "blocked": list(policy.blocked),
                                 "readOnly": policy.read_only},
                    warnings=list(endpoint.warnings))
    anyio.run(_check, settings, endpoint, secrets, report, policy)
    if as_json:
        print(secrets.redact(json.dumps(report.as_json(), ensure_ascii=False)), flush=True)
    else:
        _print_lines(report, secrets)
    return 0 if report.ok else 1
