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
from callpark.sip.message import SipParseError, in_domains, parse_name_addr, parse_sip_uri
from callpark.store.parking import Fenced, LostRace
from callpark.store.records import CallState, ParkedCall

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
            parker = ringback_target(claimed.call, self.config.allowed_domains)
            if parker is None:
                self.time_out(handle, held.call.orbit)  # nobody to ring: straight to OnTimeoutURI
                continue
            handle.send("ringback", orbit=held.call.orbit, parker_uri=parker, ring_time_s=self.config.ring_time_s)

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
            self.time_out(w, orbit)
            return
        timeout = settings.call_pickup_timeout_s
        self.calls.mutate(orbit, lambda c: replace(c, state=CallState.PARKED, deadline=time.time() + timeout))

    def time_out(self, w: WorkerHandle, orbit: str) -> None:
        """No more ringbacks: REFER the caller to OnTimeoutURI, or hang up when there is none."""
        uri = self.settings().on_timeout_uri
        if uri and not in_domains(uri, self.config.allowed_domains):
            log.warning(
                "OnTimeoutURI %s is outside the SIP domains %s: orbit %s hung up", uri, self.config.domain, orbit
            )
            uri = None
        if uri:
            self.calls.mutate(orbit, lambda c: c.with_state(CallState.FORWARDING))
            self.metrics.timeouts.labels(self.config.pool, "forwarded").inc()
            w.send("forward", orbit=orbit, uri=uri)
        else:
            self.metrics.timeouts.labels(self.config.pool, "disconnected").inc()
            w.send("disconnect", orbit=orbit)


def ringback_target(call: ParkedCall, domains: frozenset[str]) -> str | None:
    """The URI to ring back, or None when the parker is unknown or outside ``domains``.

    The parker URI comes from the park INVITE (Referred-By or From), so anyone could name any
    target: only the deployment's SIP domains are rung (no toll fraud through ringbacks).

    Unknown: no parker recorded, or the "parker" is the parked caller itself. That is a park
    INVITE with no Referred-By that no INVITE/Replaces followed: a transferee that drops the
    REFER's Referred-By (baresip 1.0) looks exactly like a parker calling ``park`` for an
    attended park, and nothing in its INVITE names the transferor. Ringing it would ring the
    caller with its own call, so such a call goes to OnTimeoutURI (or is hung up) instead.
    """
    if not call.parker_uri or same_party(call.parker_uri, call.caller_uri):
        return None
    return call.parker_uri if in_domains(call.parker_uri, domains) else None


def same_party(a: str, b: str) -> bool:
    """Whether two URIs name the same user at the same host (ports and parameters ignored)."""
    try:
        ua, ub = parse_sip_uri(parse_name_addr(a).uri), parse_sip_uri(parse_name_addr(b).uri)
    except SipParseError:
        return a.strip() == b.strip()
    return (ua.user, ua.host.lower()) == (ub.user, ub.host.lower())
