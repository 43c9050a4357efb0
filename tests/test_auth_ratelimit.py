"""FailureLimiter: free failures, doubling delays capped, sliding window, lockout, bounded memory."""

from __future__ import annotations

import asyncio

import pytest

from mssante_base.ratelimit import FailureLimiter, Limits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_three_free_failures_then_doubling_up_to_30s(clock):
    limiter = FailureLimiter(clock=clock, account=Limits(free=3, lockout=50), ip=Limits(free=100, lockout=500))
    delays = [limiter.failed("a@h.fr", "10.0.0.1") for _ in range(10)]
    assert delays == [0, 0, 0, 1, 2, 4, 8, 16, 30, 30]
    assert limiter.delay_for("a@h.fr", "10.0.0.2") == 30  # the account, whatever the address
    assert limiter.delay_for("b@h.fr", "10.0.0.1") == 0


def test_delay_counts_failures_before_the_attempt(clock):
    limiter = FailureLimiter(clock=clock)
    for _ in range(3):
        limiter.failed("a@h.fr", "ip")
    assert limiter.delay_for("a@h.fr", "ip") == 0.0  # three free failures
    limiter.failed("a@h.fr", "ip")
    assert limiter.delay_for("a@h.fr", "ip") == 1.0


def test_sliding_window_forgets_old_failures(clock):
    limiter = FailureLimiter(clock=clock, account=Limits(free=0, lockout=5, window=60))
    limiter.failed("a", "")
    clock.now += 30
    limiter.failed("a", "")
    assert limiter.delay_for("a", "") == 2.0
    clock.now += 31  # the first failure left the window
    assert limiter.delay_for("a", "") == 1.0
    clock.now += 30
    assert limiter.delay_for("a", "") == 0.0
    assert len(limiter) == 0  # empty keys are dropped


def test_lockout_until_failures_leave_the_window(clock):
    limiter = FailureLimiter(clock=clock, account=Limits(free=3, lockout=5, window=100))
    for _ in range(4):
        limiter.failed("a@h.fr", "1.2.3.4")
        clock.now += 1
    assert not limiter.locked("a@h.fr", "1.2.3.4")
    limiter.failed("a@h.fr", "1.2.3.4")
    assert limiter.locked("a@h.fr", "1.2.3.4")
    assert limiter.locked("A@H.fr", "9.9.9.9")  # the account is locked from everywhere
    assert not limiter.locked("b@h.fr", "1.2.3.4")
    clock.now += 97  # the first failure is now 101 s old
    assert not limiter.locked("a@h.fr", "1.2.3.4")


def test_ip_limits_cover_password_spraying(clock):
    limiter = FailureLimiter(clock=clock, ip=Limits(free=2, lockout=4))
    for index in range(4):
        limiter.failed(f"user{index}@h.fr", "203.0.113.9")
    assert limiter.locked("someone-else@h.fr", "203.0.113.9")
    assert limiter.delay_for("someone-else@h.fr", "203.0.113.9") == 2.0
    assert not limiter.locked("someone-else@h.fr", "203.0.113.10")


def test_success_clears_the_account_not_the_ip(clock):
    limiter = FailureLimiter(clock=clock, account=Limits(free=1, lockout=10), ip=Limits(free=1, lockout=10))
    for _ in range(3):
        limiter.failed("a@h.fr", "ip1")
    limiter.succeeded("A@h.fr", "ip1")
    assert limiter.delay_for("a@h.fr", "ip2") == 0
    assert limiter.delay_for("other@h.fr", "ip1") == 2.0
    limiter.succeeded("", "ip1")  # nothing to clear, no error


def test_memory_is_bounded(clock):
    limiter = FailureLimiter(clock=clock, max_keys=100, account=Limits(free=3, lockout=5))
    for index in range(1000):
        limiter.failed(f"user{index}@h.fr", f"10.0.{index // 256}.{index % 256}")
    assert len(limiter) == 100
    # Per key, no more timestamps than the lockout threshold needs.
    for _ in range(50):
        limiter.failed("hot@h.fr", "")
    assert len(limiter._failures[("account", "hot@h.fr")]) == 5
    # The most recent keys are the ones kept.
    assert ("account", "hot@h.fr") in limiter._failures
    assert ("account", "user0@h.fr") not in limiter._failures


def test_empty_account_and_ip(clock):
    limiter = FailureLimiter(clock=clock)
    assert limiter.failed("", "") == 0
    assert limiter.delay_for("", "") == 0
    assert not limiter.locked("", "")


def test_penalty_sleeps_the_delay(clock, monkeypatch):
    slept = []

    async def fake_sleep(delay):
        slept.append(delay)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    limiter = FailureLimiter(clock=clock, account=Limits(free=0, lockout=10))

    async def scenario():
        return [await limiter.penalty("a", "ip") for _ in range(3)]

    assert asyncio.run(scenario()) == [1.0, 2.0, 4.0]
    assert slept == [1.0, 2.0, 4.0]


def test_invalid_limits():
    with pytest.raises(ValueError):
        FailureLimiter(account=Limits(free=1, lockout=0))
    with pytest.raises(ValueError):
        FailureLimiter(max_keys=0)
