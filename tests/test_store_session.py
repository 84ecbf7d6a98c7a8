"""The lease session: the one lease + keepalive + self-fencing deadline, and the timing rules."""

from __future__ import annotations

import threading
import time

import pytest

from callpark.errors import StoreError, ValidationError
from callpark.store.memkv import MemoryKV
from callpark.store.session import ControllerTimings, LeaseSession, LeaseTimings
from callpark.waiting import wait_until


def test_the_deadline_is_the_send_time_plus_ttl_minus_the_safety_margin() -> None:
    session = LeaseSession(MemoryKV(), ttl_s=5, safety_s=2.0)
    assert not session.is_valid() and session.remaining_s() == 0.0
    sent = time.monotonic()
    session.bind(session.grant(), sent)
    assert session.lease and session.deadline == sent + 3.0 and session.is_valid()
    session.invalidate()
    assert not session.is_valid()


def test_ensure_keeps_a_live_lease_and_replaces_a_gone_one() -> None:
    kv = MemoryKV()
    session = LeaseSession(kv, ttl_s=5, safety_s=2.0)
    first = session.ensure()
    assert session.ensure() == first and not session.is_valid(), "ensure never moves the deadline"
    kv.revoke_lease(first)
    assert not session.refresh()
    assert session.ensure() != first


def test_revoke_stops_acting_and_a_failed_grant_can_be_revoked_alone() -> None:
    kv = MemoryKV()
    session = LeaseSession(kv, ttl_s=5, safety_s=2.0)
    session.bind(session.grant(), time.monotonic())
    spare = session.grant()
    session.revoke(spare)
    assert session.is_valid() and session.refresh()
    session.revoke()
    assert not session.is_valid() and not session.refresh()


class FlakyKV(MemoryKV):
    """Keepalives fail while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = threading.Event()

    def refresh_lease(self, lease_id: int) -> int:
        if self.down.is_set():
            raise StoreError("etcd unreachable")
        return super().refresh_lease(lease_id)


def test_the_keepalive_renews_skips_failures_and_reports_expiry() -> None:
    kv = FlakyKV()
    session = LeaseSession(kv, ttl_s=4, safety_s=1.0)
    session.bind(session.grant(), time.monotonic())
    renewed: list[float] = []
    expired = threading.Event()
    session.keep_alive(0.05, on_renewed=renewed.append, on_expired=expired.set)
    try:
        wait_until(lambda: len(renewed) >= 2, timeout=5, what="renewals")
        kv.down.set()
        deadline = session.deadline
        time.sleep(0.2)
        assert session.deadline == deadline, "a failed keepalive never moves the deadline"
        kv.down.clear()
        kv.revoke_lease(session.lease)
        wait_until(expired.is_set, timeout=5, what="expiry reported")
    finally:
        session.stop(1.0)
    assert not session.is_valid()


def test_a_negative_controller_grace_is_refused() -> None:
    """The other controller rules are held by tests/dr/test_controller_unit.py."""
    with pytest.raises(ValidationError) as info:
        ControllerTimings(grace_s=-1.0).validate()
    assert info.value.rule == "timing-positive"


def test_the_default_timings_are_valid() -> None:
    assert LeaseTimings().validate() == LeaseTimings()
    assert ControllerTimings().validate() == ControllerTimings()
