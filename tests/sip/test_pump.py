"""callpark.sip.pump with a fake endpoint: queueing, waking, deferred actions, timers, stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from callpark.sip.pump import Pump


class FakeEndpoint:
    """Records the pump timeouts; ``pump`` returns at once or when woken."""

    def __init__(self) -> None:
        self.timeouts: list[int] = []
        self.wakes = 0
        self._woken = threading.Event()

    def pump(self, timeout_ms: int) -> int:
        self.timeouts.append(timeout_ms)
        self._woken.wait(timeout_ms / 1000.0)
        self._woken.clear()
        return 0

    def wake(self) -> None:
        self.wakes += 1
        self._woken.set()


def test_reader_items_arrive_in_order_then_none_and_each_wakes() -> None:
    endpoint = FakeEndpoint()
    pump: Pump[str] = Pump(endpoint, max_wait_ms=100)
    thread = pump.start_reader(iter(["a", "b", "c"]), "test-reader")
    thread.join(timeout=5)
    assert list(pump.messages()) == ["a", "b", "c", None]
    assert endpoint.wakes == 4
    assert list(pump.messages()) == []


def test_wait_is_zero_with_work_queued_else_bounded_by_the_next_timer() -> None:
    pump: Pump[str] = Pump(FakeEndpoint(), max_wait_ms=100)
    assert pump.wait_ms() == 100
    pump.call_later(0.02, lambda: None)
    assert 0 <= pump.wait_ms() <= 20
    pump.clear()
    pump.post("x")
    assert pump.wait_ms() == 0
    list(pump.messages())
    pump.defer(lambda: None)
    assert pump.wait_ms() == 0


def test_deferred_actions_run_in_order_including_those_they_defer() -> None:
    pump: Pump[str] = Pump(FakeEndpoint(), max_wait_ms=100)
    ran: list[str] = []

    def first() -> None:
        ran.append("first")
        pump.defer(lambda: ran.append("nested"))

    pump.defer(first)
    pump.defer(lambda: ran.append("second"))
    pump.run_deferred()
    assert ran == ["first", "second", "nested"]


def test_due_timers_run_earliest_first_and_later_ones_wait() -> None:
    pump: Pump[str] = Pump(FakeEndpoint(), max_wait_ms=100)
    ran: list[str] = []
    pump.call_later(0.0, lambda: ran.append("b"))
    pump.call_later(-1.0, lambda: ran.append("a"))
    pump.call_later(60.0, lambda: ran.append("later"))
    pump.run_due_timers()
    assert ran == ["a", "b"]


def test_run_ticks_until_stopped_and_interrupt_wakes_a_long_pump() -> None:
    endpoint = FakeEndpoint()
    pump: Pump[str] = Pump(endpoint, max_wait_ms=10)
    ticks: list[int] = []

    def tick() -> None:
        ticks.append(1)
        if len(ticks) == 3:
            pump.stop()

    pump.run(tick)
    assert len(ticks) == 3
    assert endpoint.wakes == 0

    pump = Pump(endpoint, max_wait_ms=5000)
    threading.Timer(0.1, pump.interrupt).start()
    started = time.monotonic()
    pump.run(lambda: None)
    assert time.monotonic() - started < 2.0


def test_a_failing_source_ends_the_reader_without_none() -> None:
    def source() -> Iterator[str]:
        yield "a"
        raise OSError("gone")

    pump: Pump[str] = Pump(FakeEndpoint(), max_wait_ms=100)
    old_hook = threading.excepthook
    threading.excepthook = lambda args: None  # the thread's traceback is expected
    try:
        pump.start_reader(source(), "failing-reader").join(timeout=5)
    finally:
        threading.excepthook = old_hook
    assert list(pump.messages()) == ["a"]
