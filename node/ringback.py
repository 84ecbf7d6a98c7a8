"""Ringback timers: a parked call whose deadline passed rings its parker back.

The deadlines live in etcd (each record's ``deadline``); every loop cycle
:meth:`Ringback.fire_deadlines` claims the due calls (state ``ringing``) and asks their
worker to ring the parker. After ``max_call_pickup_attempts`` unanswered ringbacks the
call is forwarded to ``OnTimeoutURI`` or disconnected. Record writes go through
:class:`~callpark.node.calls.HeldCalls` (its lock guards them); this module keeps no state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from callpark.errors import StoreError
from callpark.model.settings import CpsSettings
from callpark.node.calls import HeldCalls
from callpark.node.context import NodeContext, NodePart
from callpark.node.protocol import Message
from callpark.node.workers import WorkerHandle, WorkerPool
from callpark.store.parking import Fenced, LostRace
from callpark.store.records import CallState

log = logging.getLogger(__name__)


class Ringback(NodePart):
    """Fires due ringbacks and acts on their results (``settings``: the pool's current CPS)."""

    def __init__(
        self, ctx: NodeContext, calls: HeldCalls, workers: WorkerPool, *, settings: Callable[[], CpsSettings]
    ) -> None:
        super().__init__(ctx)
        self.calls = calls
        self.workers = workers
        self.settings = settings

    def fire_deadlines(self) -> None:
        """Ring back the parker of every parked call whose deadline passed."""
        if not self.is_valid():
            return
        now = time.time()
        with self.calls.lock:
            due = [
                h
                for h in self.calls.held.values()
                if h.call.state == CallState.PARKED
                and h.call.deadline <= now
                and h.call.orbit not in self.calls.pending_free
                and h.call.orbit not in self.calls.moving
            ]
        for held in due:
            index = held.call.holder.worker
            handle = self.workers.handles[index] if index < len(self.workers.handles) else None
            if handle is None or not handle.ready.is_set():
                continue
            try:
                claimed = self.calls.claim(held, CallState.RINGING)  # a lost race adopts what etcd holds
            except (LostRace, Fenced, StoreError) as exc:
                log.info("ringback for orbit %s skipped (retried next cycle): %s", held.call.orbit, exc)
                continue
            if not claimed.call.parker_uri:
                self.handle_result(handle, {"orbit": held.call.orbit, "result": "failed"})
                continue
            handle.send(
                "ringback",
                orbit=held.call.orbit,
                parker_uri=claimed.call.parker_uri,
                ring_time_s=self.config.ring_time_s,
            )

    def handle_result(self, w: WorkerHandle, msg: Message) -> None:
        """``ringback_result``: count it; re-arm the timer, or forward or disconnect at the last try."""
        orbit, result = str(msg["orbit"]), str(msg["result"])
        self.metrics.ringbacks.labels(self.config.pool, result).inc()
        if result == "answered":
            return  # the worker hands the caller over and reports ``ended rang-back``
        held = self.calls.mutate(orbit, lambda c: replace(c, attempts=c.attempts + 1))
        if held is None:
            return
        settings = self.settings()
        if held.call.attempts >= settings.max_call_pickup_attempts:
            uri = settings.on_timeout_uri
            if uri:
                self.calls.mutate(orbit, lambda c: c.with_state(CallState.FORWARDING))
                self.metrics.timeouts.labels(self.config.pool, "forwarded").inc()
                w.send("forward", orbit=orbit, uri=uri)
            else:
                self.metrics.timeouts.labels(self.config.pool, "disconnected").inc()
                w.send("disconnect", orbit=orbit)
            return
        timeout = settings.call_pickup_timeout_s
        self.calls.mutate(orbit, lambda c: replace(c, state=CallState.PARKED, deadline=time.time() + timeout))
