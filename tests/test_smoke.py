import pytest

from tests.conftest import API_KEY, USER_ID, bridge_env, open_bridge

pytestmark = pytest.mark.anyio


async def test_round_trip(remote, tmp_path):
    async with open_bridge(tmp_path, bridge_env(remote)) as (client, run):
        tools = await client.list_tools()
        result = await client.call_tool("echo", {"text": "hi"})
    print(run.stderr)
    assert result.content[0].text == "hi"
    posts = remote.requests()
    assert posts[0]["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert posts[0]["headers"]["x-alloy-userid"] == USER_ID
