"""TLS: an HTTPS remote with a certificate the system does not trust is refused, clearly; a CA bundle fixes it."""

from __future__ import annotations

import pytest
import trustme

from tests.helpers import UNREACHABLE, bridge_env, open_bridge, raw_bridge, running_remote, text_of

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    return folder


async def test_self_signed_remote_is_refused_by_default_with_a_clear_message(certificates, tmp_path):
    with running_remote("--certfile", str(certificates / "cert.pem"), "--keyfile", str(certificates / "key.pem"),
                        scheme="https") as server:
        async with raw_bridge(tmp_path, bridge_env(server)) as bridge:
            answer = await bridge.request("i", "initialize", {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}})
        assert server.requests() == []
    assert answer["error"]["code"] == UNREACHABLE
    assert "not trusted" in answer["error"]["message"]
    assert "ALLOY_CA_BUNDLE" in answer["error"]["message"]


async def test_self_signed_remote_is_accepted_with_its_ca_bundle(certificates, tmp_path):
    with running_remote("--certfile", str(certificates / "cert.pem"), "--keyfile", str(certificates / "key.pem"),
                        scheme="https") as server:
        env = bridge_env(server, ALLOY_CA_BUNDLE=str(certificates / "ca.pem"))
        async with open_bridge(tmp_path, env) as (client, _):
            result = await client.call_tool("echo", {"text": "over tls"})
    assert text_of(result) == "over tls"
