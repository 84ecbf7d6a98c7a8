"""Parker notifications: the parker is told by SIP MESSAGE what became of its parked call.

Lync's Call Park tells the parker when its call is retrieved (and by whom) and sends an
``unpark-notification`` when the caller hangs up or the call is dropped. Desk phones have no
Lync control dialog, so these notices travel like the orbit MESSAGE of a blind park: a SIP
MESSAGE from ``sip:park@<domain>`` through the edge, sent by the worker that holds (or now
holds) the call. One notice per event, with an ``X-Callpark-Event`` header and an ``event=``
line in the body:

=============  ==========================================================================
``retrieved``  a retriever (``by=`` its URI) picked the call up; not sent when the parker
               retrieved it itself
``abandoned``  the parked caller hung up
``forwarded``  unanswered ringbacks: the caller was transferred to OnTimeoutURI (``by=``)
``disconnected`` unanswered ringbacks and no OnTimeoutURI: the caller was hung up
``taken-over`` another node (or worker) took the call over after its holder failed or
               was drained (``by=`` the new holder); orbit and park id are unchanged
=============  ==========================================================================

No notice for a ringback the parker answers (it has the call). The switch is per
deployment (``[notifications] parker`` in the deployment file, ``callpark node
--parker-notices on|off``; default on, see docs/ARCHITECTURE.md "Parker notifications").
Like every MESSAGE the node sends, a notice goes only to a parker inside the deployment's SIP
domains, and never when the "parker" is the parked caller itself (a transferee that dropped
Referred-By: the parker is unknown).
"""

from __future__ import annotations

import enum
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

from callpark.node.context import NodeContext, NodePart
from callpark.node.ringback import same_party
from callpark.node.workers import WorkerHandle
from callpark.sip.message import in_domains
from callpark.store.records import Outcome, ParkedCall

log = logging.getLogger(__name__)

MAX_RETRIEVERS = 1024  # retrievals connected but not yet ended; the oldest are forgotten first


class Notice(enum.StrEnum):
    """What a parker notification reports (``X-Callpark-Event``)."""

    RETRIEVED = "retrieved"
    ABANDONED = "abandoned"
    FORWARDED = "forwarded"
    DISCONNECTED = "disconnected"
    TAKEN_OVER = "taken-over"


# how a call's end maps onto a notice; rang-back and lost send none
OUTCOME_NOTICES = {
    Outcome.RETRIEVED: Notice.RETRIEVED,
    Outcome.ABANDONED: Notice.ABANDONED,
    Outcome.FORWARDED: Notice.FORWARDED,
    Outcome.DISCONNECTED: Notice.DISCONNECTED,
}


class ParkerNotices(NodePart):
    """Sends the parker notices (``on_timeout_uri``: the OnTimeoutURI in force, for ``forwarded``)."""

    def __init__(self, ctx: NodeContext, *, on_timeout_uri: Callable[[], str | None]) -> None:
        super().__init__(ctx)
        self.enabled = ctx.config.parker_notices
        self.on_timeout_uri = on_timeout_uri
        self._lock = threading.Lock()
        self._retrievers: OrderedDict[str, str] = OrderedDict()  # park id -> retriever URI

    def retrieving(self, park_id: str, retriever_uri: str) -> None:
        """A retrieval of ``park_id`` was connected; remember who for the ``retrieved`` notice."""
        if not self.enabled or not retriever_uri:
            return
        with self._lock:
            self._retrievers[park_id] = retriever_uri
            while len(self._retrievers) > MAX_RETRIEVERS:
                self._retrievers.popitem(last=False)

    def ended(self, w: WorkerHandle, call: ParkedCall, outcome: Outcome, reason: str) -> None:
        """A call ended with ``outcome`` (reported by worker ``w`` with ``reason``): tell its parker."""
        with self._lock:
            retriever = self._retrievers.pop(call.park_id, "")
        notice = OUTCOME_NOTICES.get(outcome)
        if notice is None or (outcome == Outcome.ABANDONED and reason != "caller-hangup"):
            return  # a failed call is not "the caller hung up"
        if notice == Notice.RETRIEVED:
            if retriever and call.parker_uri and same_party(retriever, call.parker_uri):
                return  # the parker took its own call back
            self._send(w, call, notice, retriever, f"{call.caller_uri} was retrieved from orbit {call.orbit}")
        elif notice == Notice.FORWARDED:
            uri = self.on_timeout_uri() or ""
            text = f"{call.caller_uri} was not picked up: forwarded to {uri or 'OnTimeoutURI'}"
            self._send(w, call, notice, uri, text)
        elif notice == Notice.DISCONNECTED:
            self._send(w, call, notice, "", f"{call.caller_uri} was not picked up from orbit {call.orbit}: hung up")
        else:
            self._send(w, call, notice, "", f"{call.caller_uri} hung up while parked on orbit {call.orbit}")

    def taken_over(self, w: WorkerHandle, call: ParkedCall) -> None:
        """Worker ``w`` of this node took ``call`` over: it stays on its orbit, held by us now."""
        self._send(w, call, Notice.TAKEN_OVER, str(self.me), f"{call.caller_uri} is still parked on orbit {call.orbit}")

    def _send(self, w: WorkerHandle, call: ParkedCall, notice: Notice, by: str, text: str) -> None:
        parker = call.parker_uri
        if not self.enabled or not parker or same_party(parker, call.caller_uri):
            return
        if not in_domains(parker, self.config.allowed_domains):
            log.debug("orbit %s: parker %s is outside the SIP domains; no %s notice", call.orbit, parker, notice)
            return
        self.metrics.parker_notices.labels(self.config.pool, notice.value).inc()
        w.send("notify", uri=parker, orbit=call.orbit, park_id=call.park_id, event=notice.value, by=by, text=text)
