"""Worker messages to the node's parts: decisions, call records, ringbacks, takeovers.

:class:`Dispatcher` runs on each worker's reader thread (one message at a time per
worker). It sends the replies of :mod:`~callpark.node.decisions`, counts their results,
and records what workers report (answered, re-dialogued, ended). It holds no state but
the per-call start times in ``HeldCalls.started`` (see :meth:`HeldCalls.pop_start`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from callpark.node.calls import HeldCalls
from callpark.node.context import NodeContext, NodePart
from callpark.node.decisions import PARKS, Decisions, Reply
from callpark.node.notify import ParkerNotices
from callpark.node.protocol import Message
from callpark.node.ringback import Ringback
from callpark.node.takeover import Takeovers
from callpark.node.workers import WorkerHandle
from callpark.sip.message import in_domains
from callpark.store.records import CallState, Dialog, Outcome, ParkedCall, ParkKind

log = logging.getLogger(__name__)

END_REASONS = {
    "caller-hangup": Outcome.ABANDONED,
    "retrieved": Outcome.RETRIEVED,
    "rang-back": Outcome.RANG_BACK,
    "forwarded": Outcome.FORWARDED,
    "disconnected": Outcome.DISCONNECTED,
    "failed": Outcome.ABANDONED,
}


class Dispatcher(NodePart):
    """Handles every worker message but ``ready`` and ``slots`` (see :class:`~callpark.node.workers.WorkerPool`)."""

    def __init__(
        self,
        ctx: NodeContext,
        *,
        calls: HeldCalls,
        decisions: Decisions,
        ringback: Ringback,
        takeovers: Takeovers,
        notices: ParkerNotices,
    ) -> None:
        super().__init__(ctx)
        self.calls = calls
        self.decisions = decisions
        self.ringback = ringback
        self.takeovers = takeovers
        self.notices = notices

    def on_message(self, w: WorkerHandle, msg: Message) -> None:
        op = msg["op"]
        if op in ("park", "retrieve"):
            decided = self.decisions.park(w, msg) if op == "park" else self.decisions.retrieve(w, msg)
            if msg.get("generation", w.generation) != w.generation:
                self._asker_died(w, decided)
            else:
                if op == "retrieve":
                    self._note_retriever(decided, msg)
                self.reply(w, msg["req"], decided)
        elif op == "answered":
            self._answered(w, msg)
        elif op == "redialog":
            self._redialog(w, msg)
        elif op == "ended":
            self._ended(w, msg)
        elif op == "ringback_result":
            self.ringback.handle_result(w, msg)
        elif op == "takeover_result":
            self.takeovers.handle_result(w, msg)
            held = self.calls.get(str(msg["orbit"])) if msg.get("ok") else None
            if held is not None:
                self.notices.taken_over(w, held.call)
        elif op == "untrusted":
            self.metrics.untrusted_rejected.labels(self.config.pool).inc()
            log.debug("worker %d refused %s from untrusted peer %s", w.index, msg.get("what"), msg.get("peer"))
        elif op == "callback_error":
            self.metrics.callback_errors.labels(str(self.me)).inc()
            log.error("worker %d callback error: %s", w.index, msg.get("error"))
        elif op == "log":
            log.log(int(msg.get("level", logging.INFO)), "worker %d: %s", w.index, msg.get("message"))
        else:
            log.warning("worker %d sent unknown op %r", w.index, op)

    def reply(self, w: WorkerHandle, req: object, reply: Reply) -> None:
        """Count ``reply``'s result and send it to the worker as the answer to request ``req``."""
        if reply.counter is not None and reply.result is not None:
            counter = self.metrics.parks if reply.counter == PARKS else self.metrics.retrievals
            counter.labels(self.config.pool, reply.result).inc()
            if reply.result == "scan-limited":
                self.metrics.orbit_scan_rejected.labels(self.config.pool).inc()
        w.send("reply", req=req, action=reply.action, **reply.fields)

    def _asker_died(self, w: WorkerHandle, reply: Reply) -> None:
        """The worker process that asked died while we decided (etcd was slow): answer nobody.

        Its channel is the restarted worker's now, which numbers its requests from 1 again and
        would take this reply for one of its own. What was written for the dead caller is undone:
        a new park is freed (abandoned), a retrieval claim goes back to parked.
        """
        orbit = str(reply.fields.get("orbit", ""))
        log.warning("worker %d died while its request was decided (%s); nobody to answer", w.index, reply.action)
        held = self.calls.get(orbit)
        if held is None or held.call.holder.worker != w.index:
            return
        if reply.action == "answer":
            self.calls.free(held, Outcome.ABANDONED, "its worker died before the park was answered")
        elif reply.action == "connect":
            self.calls.mutate(orbit, lambda c: c.with_state(CallState.PARKED) if c.state == CallState.RETRIEVING else c)

    def _answered(self, w: WorkerHandle, msg: Message) -> None:
        orbit = str(msg["orbit"])
        dialog = Dialog.from_json(msg["dialog"])
        started = self.calls.pop_start(w.index, str(msg.get("call")))
        held = self.calls.mutate(orbit, lambda c: replace(c, dialog=dialog))
        if started is not None:
            self.metrics.park_latency.labels(self.config.pool).observe(time.perf_counter() - started)
        self.metrics.parks.labels(self.config.pool, "ok").inc()
        parker = held.call.parker_uri if held is not None else None
        if (
            held is not None
            and held.call.kind != ParkKind.ATTENDED
            and parker
            and in_domains(parker, self.config.allowed_domains)
        ):
            w.send(
                "notify",
                uri=held.call.parker_uri,
                orbit=orbit,
                park_id=held.call.park_id,
                retrieve_uri=self.decisions.retrieve_uri(orbit, held.call.park_id, w),
                text=f"Parked {held.call.caller_uri} on orbit {orbit} (park id {held.call.park_id})",
            )
        if held is not None:
            self._announce_back(w, held.call)

    def _announce_back(self, w: WorkerHandle, call: ParkedCall) -> None:
        """ParkAndAnnounce (``--announce-blind``): call a blind parker back and speak the orbit."""
        parker = call.parker_uri
        if not self.config.announce_blind or call.kind != ParkKind.BLIND or not parker:
            return
        if not in_domains(parker, self.config.allowed_domains):
            return
        path = self.decisions.facts.announcement(call.orbit, call.range)
        if path is not None:
            w.send("announce", uri=parker, orbit=call.orbit, path=path, ring_time_s=self.config.ring_time_s)

    def _redialog(self, w: WorkerHandle, msg: Message) -> None:
        """An attended park completed: the caller replaced the parker's dialog."""
        dialog = Dialog.from_json(msg["dialog"])
        self.calls.mutate(str(msg["orbit"]), lambda c: replace(c, dialog=dialog, caller_uri=dialog.remote_uri))

    def _ended(self, w: WorkerHandle, msg: Message) -> None:
        orbit = msg.get("orbit")
        reason = str(msg.get("reason", "failed"))
        started = self.calls.pop_start(w.index, str(msg.get("call")))
        if reason == "retrieved" and started is not None:
            self.metrics.retrieve_latency.labels(self.config.pool).observe(time.perf_counter() - started)
        if orbit is None:
            return
        held = self.calls.get(str(orbit))
        if held is None or held.call.holder.worker != w.index:
            return
        outcome = END_REASONS.get(reason, Outcome.ABANDONED)
        self.calls.free(held, outcome, reason)
        self.notices.ended(w, held.call, outcome, reason)

    def _note_retriever(self, reply: Reply, msg: Message) -> None:
        """A retrieval this worker connects: the parker's ``retrieved`` notice names ``from_uri``."""
        if reply.action == "connect":
            held = self.calls.get(str(reply.fields.get("orbit")))
            if held is not None:
                self.notices.retrieving(held.call.park_id, str(msg.get("from_uri") or ""))
