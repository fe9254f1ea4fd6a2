"""Session state, the gate and the in-flight table: the pieces that keep every request answered once."""

from __future__ import annotations

import anyio
import pytest

from bridge.errors import BridgeError, BridgeErrorCode, RemoteRpcError
from bridge.inflight import DuplicateRequestId, InFlightTable, Pending
from bridge.messages import build_answer, build_notification, build_request
from bridge.transports.session import Gate, SessionState, valid_session_id

pytestmark = pytest.mark.anyio


def request(request_id, method, params=None):
    return Pending(build_request(request_id, method, params))


def test_an_in_flight_request_ends_exactly_once():
    table = InFlightTable()
    first = request(1, "tools/call")
    table.add(first)
    with pytest.raises(DuplicateRequestId):
        table.add(request(1, "tools/list"))
    assert table.answer(1) is first
    assert table.answer(1) is None and not table.settle(first)


def test_settle_claims_only_the_very_request_it_was_given():
    table = InFlightTable()
    old = request(1, "tools/call")
    table.add(old)
    table.answer(1)
    reused = request(1, "tools/call")
    table.add(reused)
    assert not table.settle(old)
    assert table.settle(reused)


def test_settings_are_replayed_only_once_the_remote_accepted_them():
    state = SessionState()
    level, subscribe, refused = (request(1, "logging/setLevel", {"level": "debug"}),
                                 request(2, "resources/subscribe", {"uri": "file:///a"}),
                                 request(3, "resources/subscribe", {"uri": "file:///gone"}))
    for pending in (level, subscribe, refused):
        state.remember(pending.message)
    assert state.log_level is None and not state.subscriptions
    state.confirm(level, build_answer(1, result={}))
    state.confirm(subscribe, build_answer(2, result={}))
    state.confirm(refused, build_answer(3, error={"code": -32002, "message": "Resource not found"}))
    assert state.log_level == "debug" and state.subscriptions == {"file:///a"}


def test_unsubscribe_is_never_replayed_as_a_subscription():
    state = SessionState(subscriptions={"file:///a"})
    state.remember(build_request(9, "resources/unsubscribe", {"uri": "file:///a"}))
    assert not state.subscriptions


async def test_a_replay_step_that_fails_is_a_warning_and_a_refused_one_is_dropped():
    state = SessionState(initialized=True, log_level="debug", subscriptions={"file:///a", "file:///b"})
    calls: list[tuple[str, dict]] = []

    async def call(method, params):
        calls.append((method, params))
        if method == "logging/setLevel":
            raise RemoteRpcError({"code": -32601, "message": "Method not found"}, 200)
        if params.get("uri") == "file:///b":
            raise BridgeError(BridgeErrorCode.REMOTE_TIMEOUT, "slow")
        return {}

    async def notify(method):
        calls.append((method, {}))

    await state.restore(call, notify)
    assert [c[0] for c in calls] == ["notifications/initialized", "logging/setLevel", "resources/subscribe",
                                     "resources/subscribe"]
    assert state.log_level is None  # refused: never asked again
    assert state.subscriptions == {"file:///a", "file:///b"}  # a timeout is not a refusal


def test_a_new_initialize_starts_the_handshake_over():
    state = SessionState()
    state.remember(build_request(1, "initialize", {"protocolVersion": "2025-11-25"}))
    state.remember(build_notification("notifications/initialized"))
    assert state.initialized
    state.remember(build_request(2, "initialize", {"protocolVersion": "2025-06-18"}))
    assert not state.initialized and state.init_params == {"protocolVersion": "2025-06-18"}


@pytest.mark.parametrize(("value", "valid"), [
    (b"abc-123", True), (b"caf\xc3\xa9", False), (b"a b", False), (b"", False), (b"x" * 2000, False),
    (b"\x7f", False), (b"!~", True),
])
def test_session_ids_must_be_visible_ascii(value, valid):
    assert valid_session_id(value) is valid


async def test_the_gate_holds_only_what_arrived_after_a_hold():
    gate = Gate()
    early = gate.ticket()
    hold = gate.hold()
    late = gate.ticket()
    with anyio.fail_after(1):
        await gate.wait(early)  # arrived before the hold: not held
    passed = anyio.Event()

    async def later():
        await gate.wait(late)
        passed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(later)
        await anyio.sleep(0.05)
        assert not passed.is_set()
        gate.release(hold)
        with anyio.fail_after(1):
            await passed.wait()


async def test_releasing_holds_in_any_order_never_strands_a_waiter():
    """Finding 1: a re-initialization and a desktop initialize overlapping must not leave anyone waiting."""
    for order in ((0, 1), (1, 0)):
        gate = Gate()
        holds = [gate.hold(), gate.hold()]
        done = anyio.Event()

        async def waiter(gate=gate, done=done):
            await gate.wait()
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.sleep(0.01)
            for index in order:
                gate.release(holds[index])
                await anyio.sleep(0.01)
            with anyio.fail_after(1):
                await done.wait()
