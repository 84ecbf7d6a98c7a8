"""A softphone driver for benchmarks: the test harness's :class:`Phone`, minus its polling.

:class:`callpark.lab.phone.Phone` waits by polling with back-off (3 ms first, growing to 250 ms),
which is fine for tests but adds up to hundreds of milliseconds to a wait and would make
throughput a measure of the poll interval. :class:`BenchPhone` keeps the same process, the
same JSON-lines protocol and every helper method, and only replaces how it waits: the
reader thread notifies a condition when an event or a reply arrives, so a wait wakes at
once. Every event also gets ``rx`` (this process's ``time.time()`` at arrival), so the
pipe delay between the phone's own ``ts`` and our clock can be measured.

Latency is computed from the phones' own ``ts`` (taken inside the pjsua2 callbacks), never
from when this process happened to notice an event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from callpark.lab.phone import Phone
from callpark.lab.phone.harness import PhoneError
from callpark.waiting import WaitTimeout

Event = dict[str, Any]

_ALIVE_CHECK_S = 0.25  # how often a wait re-checks that the phone process still runs


class _NotifyingEvents(list[Event]):
    """The phone's event list; appends (made under the phone's lock) wake waiters."""

    def __init__(self, cond: threading.Condition) -> None:
        super().__init__()
        self._cond = cond

    def append(self, event: Event) -> None:
        event["rx"] = time.time()
        super().append(event)
        self._cond.notify_all()


class _NotifyingReplies(dict[int, Event]):
    """The phone's reply table; inserts (made under the phone's lock) wake waiters."""

    def __init__(self, cond: threading.Condition) -> None:
        super().__init__()
        self._cond = cond

    def __setitem__(self, key: int, value: Event) -> None:
        value["rx"] = time.time()
        super().__setitem__(key, value)
        self._cond.notify_all()


class BenchPhone(Phone):
    """A :class:`Phone` whose waits are woken by arriving events instead of polling."""

    def __init__(self, user: str, **kwargs: Any) -> None:
        super().__init__(user, **kwargs)
        # The reader thread appends events and replies while holding ``self._lock``;
        # a condition on that same lock lets those appends notify waiters.
        self._cond = threading.Condition(self._lock)
        self._events = _NotifyingEvents(self._cond)
        self._replies = _NotifyingReplies(self._cond)
        self.last_command_rtt_s = 0.0

    def _wait(self, check: Callable[[], Event | None], timeout: float, what: str) -> Event:
        """Wait (woken by arrivals) until ``check`` returns an event; ``check`` runs under the lock."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = check()
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {what}")
                if not self._alive():
                    raise PhoneError(f"phone {self.user} exited while waiting for {what}; log:\n{self.log_tail()}")
                self._cond.wait(min(left, _ALIVE_CHECK_S))

    def command(self, cmd: str, *, timeout: float | None = None, **args: Any) -> Event:
        """Send ``cmd`` and return its reply (woken by the reply, no polling)."""
        cid = next(self._ids)
        sent = time.perf_counter()
        self._send({"id": cid, "cmd": cmd, **args})

        def reply() -> Event | None:
            return self._replies.pop(cid, None)

        result = self._wait(reply, timeout or self.command_timeout, f"phone {self.user}: reply to {cmd}")
        self.last_command_rtt_s = time.perf_counter() - sent
        if not result.get("ok"):
            raise PhoneError(f"phone {self.user}: {cmd} failed: {result.get('error')}")
        return result

    def _wait_for_event(self, predicate: Callable[[Event], object], since: int, timeout: float, what: str) -> Event:
        """Scan only the events not seen yet, woken by each new event (no polling)."""
        scanned = since

        def find() -> Event | None:
            nonlocal scanned
            events = self._events
            while scanned < len(events):
                event = events[scanned]
                scanned += 1
                if predicate(event):
                    return event
            return None

        return self._wait(find, timeout, what)


def is_state(call: str, *states: str) -> Callable[[Event], bool]:
    """Predicate: a ``call_state`` event of ``call`` in one of ``states``."""

    def match(event: Event) -> bool:
        return event.get("event") == "call_state" and event.get("call") == call and event.get("state") in states

    return match


def is_event(name: str, **fields: Any) -> Callable[[Event], bool]:
    """Predicate: an event ``name`` whose fields equal ``fields``."""

    def match(event: Event) -> bool:
        return event.get("event") == name and all(event.get(k) == v for k, v in fields.items())

    return match
