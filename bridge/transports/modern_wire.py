"""The 2026-07-28 wire, translated to and from what a handshake-era desktop speaks.

Pure translation, no I/O (the adapter in `stateless.py` does the exchanges):

- the per-request envelope in `_meta` (protocol version, the desktop's client info and capabilities,
  its log level) and the routing headers (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`,
  `Mcp-Param-*`, the last learned from each tool's input schema);
- the `initialize` result built from `server/discover`;
- what a handshake-era desktop must not see: result-only fields (`resultType`, `ttlMs`, `cacheScope`)
  and the 2026 stamps in `_meta` (server info, subscription ids).

The SDK supplies the constants and header rules; it is imported when an instance is made, that is only
when a remote turns out to need the adapter.
"""

from __future__ import annotations

from typing import Any

from bridge.errors import RemoteRpcError

MODERN_VERSION = "2026-07-28"
_RESULT_ONLY_FIELDS = ("resultType", "ttlMs", "cacheScope")
_HANDSHAKE_CAPABILITIES = ("experimental", "logging", "completions", "prompts", "resources", "tools", "tasks")
_PROTOCOL_META = "io.modelcontextprotocol/"


def json_object(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (remote data is never trusted to have a shape)."""
    return value if isinstance(value, dict) else {}


def modern_versions_offered(refusal: RemoteRpcError) -> list[str]:
    """The 2026-era versions a -32022 refusal of `initialize` names (empty: not a modern-only remote)."""
    if refusal.code != -32022:
        return []
    data = refusal.error.get("data")
    supported = data.get("supported") if isinstance(data, dict) else None
    return [v for v in supported or [] if isinstance(v, str) and v >= MODERN_VERSION]


class ModernWire:
    """The envelope and headers for one desktop's requests, and the stripping of what it must not see."""

    def __init__(self, version: str = MODERN_VERSION) -> None:
        from mcp.shared import inbound
        from mcp_types import (
            CLIENT_CAPABILITIES_META_KEY,
            CLIENT_INFO_META_KEY,
            LOG_LEVEL_META_KEY,
            PROTOCOL_VERSION_META_KEY,
            SERVER_INFO_META_KEY,
        )
        from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION

        self._inbound = inbound
        self._keys = (PROTOCOL_VERSION_META_KEY, CLIENT_INFO_META_KEY, CLIENT_CAPABILITIES_META_KEY)
        self._log_level_key = LOG_LEVEL_META_KEY
        self._server_info_key = SERVER_INFO_META_KEY
        self._handshake_versions = HANDSHAKE_PROTOCOL_VERSIONS
        self._latest_handshake = LATEST_HANDSHAKE_VERSION
        self.version = version
        self.client_info: dict[str, Any] = {}
        self.capabilities: dict[str, Any] = {}
        self.log_level: str | None = None
        self._header_maps: dict[str, Any] = {}

    # --- desktop -> remote ------------------------------------------------------------------

    def envelope(self, params: dict[str, Any]) -> dict[str, Any]:
        """`params` with the per-request `_meta` envelope (the desktop's own identity, unchanged)."""
        meta = dict(params.get("_meta") or {})
        version_key, info_key, capabilities_key = self._keys
        meta[version_key] = self.version
        meta[info_key] = self.client_info
        meta[capabilities_key] = self.capabilities
        if self.log_level is not None:
            meta.setdefault(self._log_level_key, self.log_level)
        return {**params, "_meta": meta}

    def headers(self, method: str, params: dict[str, Any]) -> dict[str, str]:
        """The HTTP headers of one request: content negotiation and the routing headers."""
        inbound = self._inbound
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
                   inbound.MCP_PROTOCOL_VERSION_HEADER: self.version, inbound.MCP_METHOD_HEADER: method}
        name_key = inbound.NAME_BEARING_METHODS.get(method)
        if name_key is not None and isinstance(params.get(name_key), str):
            headers[inbound.MCP_NAME_HEADER] = inbound.encode_header_value(params[name_key])
        if method == "tools/call" and isinstance(params.get("name"), str):
            header_map = self._header_maps.get(params["name"])
            arguments = params.get("arguments")
            if header_map and isinstance(arguments, dict):
                headers.update(inbound.mcp_param_headers(header_map, arguments))
        return headers

    def learn_tool_headers(self, result: dict[str, Any]) -> None:
        """Remember which tool arguments a `tools/call` must mirror as `Mcp-Param-*` headers."""
        for tool in result.get("tools") or []:
            if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                schema = tool.get("inputSchema")
                try:
                    if self._inbound.find_invalid_x_mcp_header(schema) is None:
                        self._header_maps[tool["name"]] = self._inbound.x_mcp_header_map(schema)
                except (TypeError, ValueError, AttributeError):
                    continue

    # --- remote -> desktop ------------------------------------------------------------------

    def initialize_result(self, discovered: dict[str, Any], requested: Any) -> dict[str, Any]:
        """The desktop's `initialize` result, from the remote's `server/discover` result."""
        capabilities = json_object(discovered.get("capabilities"))
        version = requested if requested in self._handshake_versions else self._latest_handshake
        server_info = json_object(discovered.get("_meta")).get(self._server_info_key)
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": {k: v for k, v in capabilities.items() if k in _HANDSHAKE_CAPABILITIES},
            "serverInfo": server_info if isinstance(server_info, dict) else {"name": "remote", "version": "unknown"},
        }
        if isinstance(discovered.get("instructions"), str):
            result["instructions"] = discovered["instructions"]
        resources = result["capabilities"].get("resources")
        if isinstance(resources, dict):
            result["capabilities"]["resources"] = {**resources, "subscribe": True}  # served by subscriptions/listen
        return result

    def for_desktop(self, result: dict[str, Any]) -> dict[str, Any]:
        """A result without what a handshake-era result does not have."""
        cleaned = {k: v for k, v in result.items() if k not in _RESULT_ONLY_FIELDS}
        meta = cleaned.get("_meta")
        if isinstance(meta, dict) and self._server_info_key in meta:
            meta = {k: v for k, v in meta.items() if k != self._server_info_key}
            if meta:
                cleaned["_meta"] = meta
            else:
                cleaned.pop("_meta")
        return cleaned


def notification_params_for_desktop(params: dict[str, Any]) -> dict[str, Any] | None:
    """A notification's params without the 2026 stamps in `_meta`; None when it carries none (unchanged)."""
    meta = params.get("_meta")
    if not (isinstance(meta, dict) and any(k.startswith(_PROTOCOL_META) for k in meta)):
        return None
    cleaned = {k: v for k, v in params.items() if k != "_meta"}
    kept = {k: v for k, v in meta.items() if not k.startswith(_PROTOCOL_META)}
    if kept:
        cleaned["_meta"] = kept
    return cleaned
