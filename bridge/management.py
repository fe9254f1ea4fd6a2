"""The client of Alloy's Server Management API (`{ALLOY_BASE_URL}/api/servers`).

It sends through the bridge's own `RemoteHttp`, so the retry policy is the
bridge's: 429 and 503 are retried after `Retry-After` within the budget (a
`POST` that creates a server is never resent after it may have run), and every
failure becomes one `ManagementError` whose message says what to do. Objects
are returned as the API sent them: fields the documentation does not list are
kept, never assumed.

Restrictions (connectors, actions, users; allowlist or blocklist) are built
and merged here too: a `PUT` replaces the server's restrictions whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import anyio

from bridge.errors import BridgeError, RemoteFailure, management_message
from bridge.http import RemoteHttp
from bridge.messages import NotJson, decode_value
from bridge.retry import RetryState

# The restriction categories: the flag's noun, the API's key, and the API's names for the two lists.
CATEGORIES = (
    ("connector", "connectors", "allowedIds", "blockedIds"),
    ("action", "actions", "allowedActions", "blockedActions"),
    ("user", "users", "allowedIds", "blockedIds"),
)
# What only `create` may show: the access token, and the access URL that embeds it.
SECRET_FIELDS = ("accessToken", "accessUrl")


class ManagementError(Exception):
    """A management call failed; the message is one line saying what happened and what to do."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


@dataclass
class RestrictionChange:
    """Restrictions asked for on the command line: per category, a mode and its ids."""

    categories: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.categories)


def restrictions_from(allow: dict[str, list[str]], block: dict[str, list[str]],
                      base: dict[str, Any] | None = None) -> RestrictionChange:
    """`--allow-X` makes category X an allowlist, `--block-X` a blocklist; both for one category is an error.

    `base` is a restrictions object (from `--restrictions-file`); the flags replace its categories.

    Raises:
        ValueError: naming the category given both ways, or a malformed base.
    """
    categories: dict[str, dict[str, Any]] = {}
    if base is not None:
        if not isinstance(base, dict):
            raise ValueError("the restrictions file must hold a JSON object")
        categories.update({key: value for key, value in base.items() if isinstance(value, dict)})
    for noun, key, allowed_key, blocked_key in CATEGORIES:
        allowed, blocked = allow.get(noun) or [], block.get(noun) or []
        if allowed and blocked:
            raise ValueError(f"--allow-{noun} and --block-{noun} both given: a category is an allowlist or a "
                             "blocklist, not both")
        if allowed:
            categories[key] = {"mode": "allowlist", allowed_key: list(dict.fromkeys(allowed))}
        elif blocked:
            categories[key] = {"mode": "blocklist", blocked_key: list(dict.fromkeys(blocked))}
    return RestrictionChange(categories)


def merge_restrictions(current: Any, change: RestrictionChange) -> tuple[dict[str, Any], list[str]]:
    """The server's current restrictions with `change` merged in, and notes on what could not be merged.

    Same mode: the id lists are joined. A different mode: the new category replaces the old one.
    Categories not mentioned are kept.
    """
    merged: dict[str, Any] = {k: v for k, v in (current or {}).items()} if isinstance(current, dict) else {}
    notes: list[str] = []
    for _noun, key, allowed_key, blocked_key in CATEGORIES:
        new = change.categories.get(key)
        if new is None:
            continue
        old = merged.get(key)
        if isinstance(old, dict) and old.get("mode") == new.get("mode"):
            list_key = allowed_key if new.get("mode") == "allowlist" else blocked_key
            joined = [*(old.get(list_key) or []), *(new.get(list_key) or [])]
            merged[key] = {**old, list_key: list(dict.fromkeys(joined))}
        else:
            if isinstance(old, dict) and old.get("mode"):
                notes.append(f"{key}: was a {old.get('mode')}, now a {new.get('mode')} (replaced)")
            merged[key] = new
    for key, value in change.categories.items():
        if key not in merged:
            merged[key] = value
    return merged, notes


def without_secrets(server: Any) -> Any:
    """A server object without the access token and the URL embedding it."""
    if isinstance(server, dict):
        return {key: value for key, value in server.items() if key not in SECRET_FIELDS}
    return server


class ServerManagement:
    """`/api/servers`: list, get, create, update, delete."""

    def __init__(self, http: RemoteHttp) -> None:
        self.http = http
        self.base = http.url

    async def list(self) -> dict[str, Any]:
        listed = await self._call("GET", "", "servers/list")
        if not isinstance(listed, dict) or not isinstance(listed.get("servers"), list):
            raise ManagementError("The management API's list answer has no `servers` array; is ALLOY_BASE_URL "
                                  "the Alloy MCP platform?")
        return listed

    async def get(self, server_id: str) -> dict[str, Any]:
        return _object(await self._call("GET", _path(server_id), "servers/get"))

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return _object(await self._call("POST", "", "servers/create", body))

    async def update(self, server_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return _object(await self._call("PUT", _path(server_id), "servers/update", body))

    async def delete(self, server_id: str) -> dict[str, Any]:
        """Delete; a 404 to a DELETE resent after a gateway error means the first attempt did it."""
        retry = self.http.policy.start()
        try:
            return _object(await self._call("DELETE", _path(server_id), "servers/delete", retry=retry))
        except ManagementError as error:
            if error.http_status == 404 and retry.maybe_ran:
                return {}
            raise

    async def _call(self, method: str, path: str, name: str, body: dict[str, Any] | None = None, *,
                    retry: RetryState | None = None) -> Any:
        headers = {"accept": "application/json"}
        content = None
        if body is not None:
            headers["content-type"] = "application/json"
            content = json.dumps(body, ensure_ascii=False).encode()
        try:
            async with self.http.open(method, url=self.base + path, body=content, headers=headers,
                                      rpc_method=name, retry=retry) as response:
                try:
                    with anyio.fail_after(self.http.read_timeout):  # however slowly an answer trickles in
                        raw = await self.http.read_body(response, name)
                except TimeoutError:
                    raise self.http.lost(TimeoutError(), name) from None
        except BridgeError as error:
            raise _explain(error, name) from None
        except RemoteFailure as failure:
            raise ManagementError(failure.reason) from None
        if not raw.strip():
            return {}
        try:
            return decode_value(raw)
        except NotJson:
            raise ManagementError(f"The management API answered {name} with something that is not JSON; is "
                                  "ALLOY_BASE_URL the Alloy MCP platform?") from None


def _path(server_id: str) -> str:
    if not server_id or server_id in (".", "..") or "/" in server_id:
        raise ManagementError(f"{server_id!r} is not a server id")
    return "/" + quote(server_id, safe="")


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManagementError("The management API answered with something that is not a JSON object.")
    return value


def _explain(error: BridgeError, name: str) -> ManagementError:
    return ManagementError(management_message(error, name), error.http_status)
