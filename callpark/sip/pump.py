"""The main-thread event loop of a single-threaded pjsua2 process (pjsua2-free itself).

With the default :class:`~callpark.sip.endpoint.MediaTuning` every pjsua2 callback runs
inside ``libHandleEvents`` on the one thread that pumps, and no other thread may touch
pjsua2. So a process (the park node worker, the lab phone) runs one :class:`Pump`:

- a reader thread (:meth:`Pump.start_reader`) only queues what it reads (supervisor
  messages, stdin lines) and wakes the pump with CRLFCRLF to our own SIP port, so a
  long pump does not delay it; ``None`` in the queue means the source ended;
- the main thread calls :meth:`Pump.run` with its ``tick``: after each pump the tick takes
  the queued messages (:meth:`Pump.messages`), runs actions deferred out of callbacks
  (:meth:`Pump.run_deferred`) and due timers (:meth:`Pump.run_due_timers`), in its own order;
- :meth:`Pump.stop` ends the loop after the current tick; :meth:`Pump.interrupt` does the
  same from another thread or a signal handler.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")

Action = Callable[[], None]


class Pumpable(Protocol):
    """What the pump needs of :class:`~callpark.sip.endpoint.SipEndpoint`."""

    def pump(self, timeout_ms: int) -> int:
        """Run the library's event loop for up to ``timeout_ms``; return early on an event."""
        ...

    def wake(self) -> None:
        """Make a pump running in another thread return at once."""
        ...


class Pump(Generic[T]):
    """Pump ``endpoint`` on the calling thread; queue of ``T`` from a reader thread.

    Only :meth:`post` and :meth:`interrupt` may be called from another thread.
    """

    def __init__(self, endpoint: Pumpable, *, max_wait_ms: int) -> None:
        self.endpoint = endpoint
        self.max_wait_ms = max_wait_ms
        self.running = True
        self._inbox: queue.Queue[T | None] = queue.Queue()
        self._deferred: list[Action] = []
        self._timers: list[tuple[float, int, Action]] = []
        self._seq = itertools.count(1)

    # -- the loop

    def run(self, tick: Action) -> None:
        """Pump and ``tick`` until :meth:`stop`."""
        while self.running:
            self.endpoint.pump(self.wait_ms())
            tick()

    def wait_ms(self) -> int:
        """How long the next pump may wait: 0 with work queued, else until the next timer."""
        if self._deferred or not self._inbox.empty():
            return 0
        timeout = float(self.max_wait_ms)
        if self._timers:
            timeout = min(timeout, max(0.0, (self._timers[0][0] - time.monotonic()) * 1000.0))
        return int(timeout)

    def stop(self) -> None:
        """End :meth:`run` after the current tick (pump thread)."""
        self.running = False

    def interrupt(self) -> None:
        """:meth:`stop` from another thread or a signal handler: also wake the pump."""
        self.running = False
        self.endpoint.wake()

    # -- messages from the reader thread

    def start_reader(self, source: Iterable[T], name: str) -> threading.Thread:
        """A daemon thread that :meth:`post`\\ s each item of ``source``, then ``None``.

        An exception out of ``source`` ends the thread without the ``None``: sources catch
        the errors that mean "ended" themselves.
        """
        thread = threading.Thread(target=self._read, args=(source,), name=name, daemon=True)
        thread.start()
        return thread

    def _read(self, source: Iterable[T]) -> None:
        for item in source:
            self.post(item)
        self.post(None)

    def post(self, item: T | None) -> None:
        """Queue ``item`` (``None``: the source ended) and wake the pump (any thread)."""
        self._inbox.put(item)
        self.endpoint.wake()

    def messages(self) -> Iterator[T | None]:
        """The queued items, oldest first, without blocking (``None``: the source ended)."""
        while True:
            try:
                yield self._inbox.get_nowait()
            except queue.Empty:
                return

    # -- deferred actions and timers (pump thread)

    def defer(self, fn: Action) -> None:
        """Run ``fn`` at the next :meth:`run_deferred` (outside pjsua callbacks)."""
        self._deferred.append(fn)

    def run_deferred(self) -> None:
        """Run the deferred actions in order, including those they defer."""
        while self._deferred:
            self._deferred.pop(0)()

    def call_later(self, delay_s: float, fn: Action) -> None:
        """Run ``fn`` at the first :meth:`run_due_timers` ``delay_s`` from now."""
        heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._seq), fn))

    def run_due_timers(self) -> None:
        """Run the timers that are due, earliest first."""
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            fn()

    def clear(self) -> None:
        """Forget deferred actions and timers (at shutdown: they hold call references)."""
        self._deferred.clear()
        self._timers.clear()
