"""retry.py is the one place that decides what is tried again: its table, as behaviour."""

from __future__ import annotations

import time

import pytest

from bridge.retry import (
    FIRST_CONTACT_WINDOW,
    Backoff,
    RetryPolicy,
    SessionPacer,
    is_idempotent,
    parse_retry_after,
    resume_delay,
)

POLICY = RetryPolicy(max_retries=4, retry_budget=30.0, connect_timeout=10.0)


def test_tools_call_is_never_idempotent_but_reads_and_notifications_are():
    assert not is_idempotent("tools/call")
    assert not is_idempotent("some/new-method")
    assert is_idempotent("tools/list") and is_idempotent("initialize")
    assert is_idempotent("notifications/cancelled") and is_idempotent(None)


def test_connect_failures_are_retried_until_the_connect_timeout_once_the_remote_was_reached():
    state = POLICY.start()
    state.started -= 9.9
    assert POLICY.delay_after_connect_failure(state, ever_connected=True) is not None
    state.started -= 0.2
    assert POLICY.delay_after_connect_failure(state, ever_connected=True) is None


def test_before_first_contact_connect_failures_give_up_within_the_first_contact_window():
    state = POLICY.start()
    state.started -= FIRST_CONTACT_WINDOW + 0.01
    assert POLICY.delay_after_connect_failure(state, ever_connected=False) is None
    fresh = POLICY.start()
    delay = POLICY.delay_after_connect_failure(fresh, ever_connected=False)
    assert delay is not None and delay <= FIRST_CONTACT_WINDOW


@pytest.mark.parametrize(("status", "retry_after", "method", "retried"), [
    (429, None, "tools/call", True),
    (429, 2.0, "tools/call", True),
    (503, 1.0, "tools/call", True),
    (503, None, "tools/call", False),
    (503, None, "tools/list", True),
    (502, None, "tools/list", True),
    (504, None, "tools/call", False),
    (500, None, "tools/list", False),
    (400, None, "tools/list", False),
])
def test_status_retry_table(status, retry_after, method, retried):
    delay = POLICY.delay_after_status(POLICY.start(), status, retry_after, method)
    assert (delay is not None) is retried
    if retried and retry_after is not None:
        assert delay == retry_after


def test_a_retry_after_beyond_the_budget_is_not_waited_for():
    assert POLICY.delay_after_status(POLICY.start(), 429, 31.0, "tools/list") is None


def test_retries_stop_at_max_retries():
    state = POLICY.start()
    delays = [POLICY.delay_after_status(state, 429, 0.0, "x") for _ in range(6)]
    assert delays == [0.0, 0.0, 0.0, 0.0, None, None]


def test_a_dropped_connection_is_resent_three_times_for_idempotent_methods_only():
    state = POLICY.start()
    assert [POLICY.delay_after_drop(state, "tools/list") for _ in range(4)] == [0.2, 0.4, 0.8, None]
    assert POLICY.delay_after_drop(POLICY.start(), "tools/call") is None


def test_a_stream_resumption_never_waits_past_the_requests_time():
    assert resume_delay(100_000_000, remaining=3.0) == 3.0
    assert resume_delay(None, remaining=5.0) == 1.0
    assert resume_delay(200, remaining=5.0) == 0.2
    assert resume_delay(1000, remaining=0.0) is None


def test_retry_after_as_seconds_or_an_http_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("nan") is None and parse_retry_after("inf") is None
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= (parse_retry_after(date) or 0) <= 31
    assert parse_retry_after("Fri, 31 Dec 99999 23:59:59 GMT") is None


def test_backoff_doubles_up_to_its_cap_and_resets():
    backoff = Backoff(first=0.5, cap=2.0)
    assert [backoff.next_delay() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_sessions_that_never_work_are_reopened_ever_more_slowly():
    pacer = SessionPacer()
    assert [pacer.delay() for _ in range(4)] == [0.0, 0.5, 1.0, 2.0]
    pacer.proven()
    assert pacer.delay() == 0.0
