"""The 2026-07-28 wire translation (`bridge.transports.modern_wire`): pure functions, no I/O."""

from __future__ import annotations

from bridge.errors import RemoteRpcError
from bridge.transports.modern_wire import (
    MODERN_VERSION,
    ModernWire,
    modern_versions_offered,
    notification_params_for_desktop,
)


def test_the_envelope_carries_the_desktops_identity_and_keeps_its_own_meta():
    wire = ModernWire()
    wire.client_info, wire.capabilities, wire.log_level = {"name": "desk"}, {"roots": {}}, "debug"
    params = wire.envelope({"name": "echo", "_meta": {"progressToken": 7}})
    meta = params["_meta"]
    assert params["name"] == "echo" and meta["progressToken"] == 7
    assert MODERN_VERSION in meta.values() and {"name": "desk"} in meta.values() and {"roots": {}} in meta.values()
    assert "debug" in meta.values()


def test_a_tools_call_gets_the_method_and_name_routing_headers():
    headers = ModernWire().headers("tools/call", {"name": "echo", "arguments": {}})
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["mcp-method"] == "tools/call" and lowered["mcp-name"] == "echo"
    assert lowered["mcp-protocol-version"] == MODERN_VERSION


def test_results_lose_the_fields_a_handshake_era_desktop_does_not_have():
    result = ModernWire().for_desktop({"content": [], "resultType": "complete", "ttlMs": 5, "cacheScope": "x"})
    assert result == {"content": []}


def test_notifications_lose_only_the_2026_stamps_in_meta():
    stamped = {"uri": "u", "_meta": {"io.modelcontextprotocol/subscriptionId": "s", "mine": 1}}
    assert notification_params_for_desktop(stamped) == {"uri": "u", "_meta": {"mine": 1}}
    assert notification_params_for_desktop({"uri": "u", "_meta": {"mine": 1}}) is None  # unchanged


def test_only_a_minus_32022_refusal_names_modern_versions():
    refusal = RemoteRpcError({"code": -32022, "message": "no", "data": {"supported": ["2025-11-25", MODERN_VERSION]}})
    assert modern_versions_offered(refusal) == [MODERN_VERSION]
    assert modern_versions_offered(RemoteRpcError({"code": -32600, "message": "no"})) == []
