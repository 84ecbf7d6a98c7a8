"""The worker's calls: answer a park, connect a retriever, hand a caller over, ringback, takeover.

All of it runs on the pump thread, inside pjsua2 callbacks or commands from the supervisor.
A parked caller is handed over with a REFER carrying Replaces of the other leg's dialog (the
node leaves the media path) or, when that cannot work, bridged in this worker.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pjsua2 as pj

from callpark.node.protocol import Message, dialog_json
from callpark.node.worker.announce import Announcer
from callpark.node.worker.music import HoldMusic, connect_audio
from callpark.peers import TrustedPeers
from callpark.sip.call import AUDIO_UP, TrackedCall
from callpark.sip.endpoint import PJSUA_MAX_CALLS, op_param
from callpark.sip.message import SipMessage, refer_to_with_replaces, replaces_value
from callpark.sip.pump import Pump
from callpark.store.records import Dialog

log = logging.getLogger("callpark.node.worker")

UNTRUSTED = (403, "Forbidden: untrusted peer")


class Send(Protocol):
    """Send one message to the supervisor (``node/protocol.py``)."""

    def __call__(self, op: str, /, **fields: Any) -> None: ...


class Role:
    """The part a call plays in this worker."""

    PARK = "park"  # a caller being parked or held on an orbit
    RETRIEVER = "retriever"
    RINGBACK = "ringback"  # our call to the parker
    TAKEOVER = "takeover"  # INVITE with Replaces to a parked caller
    REPLACED = "replaced"  # a dialog that another one replaced (attended park)
    ANNOUNCE = "announce"  # our call to a blind parker that speaks the orbit, then hangs up
    REJECTED = "rejected"


class WorkerCall(TrackedCall):
    """A call of this worker with its role and the orbit it belongs to."""

    def __init__(self, control: CallControl, acc: Any, call_id: int = pj.PJSUA_INVALID_ID, *, role: str) -> None:
        super().__init__(acc, call_id)
        self.control = control
        self.role = role
        self.orbit: str | None = None
        self.handle = f"c{next(control.handles)}"
        self.state = "NULL"
        self.media_up = False
        self.confirmed = False
        self.ended_reported = False
        self.transferring: str | None = None  # why we REFERred the caller away
        self.bridge_peer: WorkerCall | None = None
        self.ring_deadline: float | None = None
        self.peer: WorkerCall | None = None  # the parked caller this leg belongs to
        self.replaces_ok = False  # retrieval: both ends support Replaces
        self.handed_to: str | None = None  # the leg a parked call was REFERred to (Replaces)
        self.created_sdp = ""
        self.retry_direct: Message | None = None  # a takeover sent through the edge: its order

    # -- callbacks (all on the pump thread) ----------------------------------------------------

    def onCallState(self, prm: Any) -> None:
        super().onCallState(prm)
        self.control.guard("onCallState", self._on_state)

    def _on_state(self) -> None:
        info = self.getInfo()
        self.state = str(info.stateText)
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED and not self.confirmed:
            self.confirmed = True
            self.control.on_confirmed(self)
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.control.on_disconnected(self, int(info.lastStatusCode), str(info.lastReason))

    def onCallMediaState(self, prm: Any) -> None:
        self.control.guard("onCallMediaState", self.control.on_media, self)

    def onCallSdpCreated(self, prm: Any) -> None:
        # pjsua builds our SDP answer when the INVITE arrives, before the orbit is chosen:
        # keep it, so the park answer can carry it with the orbit (see CallControl.answer_park).
        self.created_sdp = str(prm.sdp.wholeSdp)

    def onCallTransferRequest(self, prm: Any) -> None:
        # A parked caller or retriever may not make the park node call anyone.
        prm.statusCode = 603

    def onCallTransferStatus(self, prm: Any) -> None:
        self.control.guard("onCallTransferStatus", self.control.on_transfer_status, self, prm)

    def onCallReplaceRequest(self, prm: Any) -> None:
        self.control.guard("onCallReplaceRequest", self.control.on_replace_request, self, prm)

    def onCallReplaced(self, prm: Any) -> None:
        self.control.guard("onCallReplaced", self.control.on_replaced, self, prm)

    def on_sip_message(self, msg: SipMessage, raw: str, *, sent: bool) -> None:
        # Glare (RFC 3261 14.1): our re-INVITE to sendrecv of a bridged caller crossed the
        # caller's own (Linphone resumes the call after a failed REFER; both got 491).
        # Retry after a random 0-2 s, or the retriever's audio never reaches the caller.
        if not sent and msg.status_code == 491 and msg.cseq_method == "INVITE" and self.bridge_peer is not None:
            delay = random.uniform(0.0, 2.0)
            log.warning("re-INVITE of bridged call %s crossed the caller's (491); again in %.1fs", self.handle, delay)
            self.control.pump.call_later(delay, lambda: _sendrecv(self))


class CallControl:
    """The calls of the worker and what happens to them (pump thread only).

    ``calls`` holds every live call by handle, ``by_orbit`` the parked caller of each orbit
    held here. ``direct`` (and ``edge``, with a proxy) are the accounts, set once created.
    """

    def __init__(
        self, send: Send, pump: Pump[Message], music: HoldMusic, trusted: TrustedPeers, handles: Iterator[int]
    ) -> None:
        self.send = send
        self.pump = pump
        self.music = music
        self.trusted = trusted
        self.handles = handles
        self.calls: dict[str, WorkerCall] = {}
        self.by_orbit: dict[str, WorkerCall] = {}
        self.graveyard: list[WorkerCall] = []
        self.announcer = Announcer()
        self.direct: Any = None
        self.edge: Any = None

    # -- plumbing --------------------------------------------------------------------------------

    def guard(self, where: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a callback body; count and report exceptions (pjsua2 would swallow them)."""
        try:
            return fn(*args)
        except Exception as exc:
            log.exception("%s failed", where)
            self.send("callback_error", error=f"{where}: {exc.__class__.__name__}: {exc}")
            return None

    def untrusted(self, peer: str, what: str) -> bool:
        """True (and reported to the supervisor) when ``peer`` is not a trusted peer."""
        if self.trusted.allows(peer):
            return False
        self.send("untrusted", peer=peer, what=what)
        return True

    def adopt(self, call: WorkerCall) -> WorkerCall:
        self.calls[call.handle] = call
        return call

    def free_slots(self) -> int:
        active = sum(1 for c in self.calls.values() if c.state != "DISCONNECTED")
        return max(0, PJSUA_MAX_CALLS - active)

    def outgoing_account(self) -> Any:
        return self.edge if self.edge is not None else self.direct

    def bury(self) -> None:
        """Drop references to finished calls outside their callbacks.

        pjsua2's ``Call`` destructor hangs up the pjsua call with the object's id, and
        detaches it from Python, even after that call ended; pjsua reuses ids 0..3. So an
        ended object is released only while no live call has its id (never later).
        """
        for handle, call in list(self.calls.items()):
            if call.state == "DISCONNECTED" and call not in self.graveyard:
                self.graveyard.append(call)
                del self.calls[handle]
                self.music.wanted.pop(handle, None)  # per-call state ends with the call
                self.music.homes.pop(handle, None)
                self.announcer.forget(handle)
        if len(self.graveyard) > 8:
            live = {c.getId() for c in self.calls.values()}
            keep = [c for c in self.graveyard if c.getId() in live]
            if len(keep) < len(self.graveyard):
                self.graveyard = keep
                gc.collect()

    def forget_all(self) -> None:
        """At shutdown: report every held call ended, then forget parked and buried calls."""
        for orbit, call in list(self.by_orbit.items()):
            if call.state != "DISCONNECTED" and not call.ended_reported:
                call.ended_reported = True
                self.send("ended", orbit=orbit, call=call.handle, reason="disconnected")
        self.by_orbit.clear()
        self.graveyard.clear()
        for handle in list(self.announcer.playing):  # players go before libDestroy
            self.announcer.forget(handle)

    # -- answers to an incoming INVITE ------------------------------------------------------------

    def reject(
        self, call: WorkerCall, code: int, reason: str, warning: str, extra: dict[str, str] | None = None
    ) -> None:
        call.role = Role.REJECTED
        headers = {"Warning": f'399 callpark "{_quote_safe(warning)}"', **(extra or {})}
        with contextlib.suppress(pj.Error):
            call.answer(op_param(code, headers=headers, reason=reason))

    def redirect(self, call: WorkerCall, contact: str) -> None:
        call.role = Role.REJECTED
        call.answer(op_param(302, headers={"Contact": f"<{contact}>"}, reason="Moved Temporarily"))

    def answer_park(self, call: WorkerCall, msg: Message) -> None:
        """Hold ``call`` on the orbit the supervisor allocated: 200 sendonly, the orbit in headers."""
        orbit = str(msg["orbit"])
        call.role = Role.PARK
        call.orbit = orbit
        self.by_orbit[orbit] = call
        self.music.wanted[call.handle] = bool(msg.get("music", True))
        self.music.follow(call.handle, msg.get("music_path"))
        self.announcer.want(call.handle, msg.get("announce"))
        headers = {"X-Callpark-Orbit": orbit, "X-Callpark-Park-Id": str(msg.get("park_id", ""))}
        if msg.get("retrieve_uri"):
            headers["X-Callpark-Retrieve-Uri"] = f"<{msg['retrieve_uri']}>"
        answer_sdp = park_answer_sdp(call.created_sdp, orbit)
        # the reason phrase names the orbit: a blind parker's final NOTIFY (sipfrag) carries it
        reason = f"Parked on {orbit}"
        if answer_sdp is None:
            call.answer(op_param(200, headers=headers, sendonly=True, reason=reason))
        else:
            prm = op_param(200, headers=headers, reason=reason)
            prm.sdp.wholeSdp = answer_sdp
            call.answer(prm)

    def connect_retriever(self, retriever: WorkerCall, orbit: str, replaces: bool) -> None:
        parked = self.by_orbit.get(orbit)
        if parked is None or parked.state == "DISCONNECTED":
            self.reject(retriever, 404, "Not Found", f"35000 Orbit not found: {orbit} is no longer held here")
            self.send("ended", orbit=orbit, call=retriever.handle, reason="failed")
            return
        retriever.role = Role.RETRIEVER
        retriever.orbit = orbit
        retriever.peer = parked
        retriever.replaces_ok = replaces
        retriever.answer(op_param(200))

    # -- call progress ----------------------------------------------------------------------------------

    def on_confirmed(self, call: WorkerCall) -> None:
        if call.role == Role.PARK and call.orbit is not None:
            self.send("answered", call=call.handle, orbit=call.orbit, dialog=call_dialog(call))
        elif call.role == Role.PARK and call.orbit is None and call.peer is not None:
            pass
        elif call.role == Role.RINGBACK and call.peer is not None:
            call.ring_deadline = None
            self.send("ringback_result", orbit=call.orbit, result="answered")
            self.hand_over(call.peer, call, reason="rang-back")
        elif call.role == Role.RETRIEVER and call.peer is not None:
            self.hand_over(call.peer, call, reason="retrieved", replaces=call.replaces_ok)
        elif call.role == Role.ANNOUNCE:
            call.ring_deadline = None  # answered: it hangs up once the announcement has played
        elif call.role == Role.TAKEOVER and call.orbit is not None:
            call.role = Role.PARK
            self.by_orbit[call.orbit] = call
            self.send("takeover_result", orbit=call.orbit, ok=True, dialog=call_dialog(call))

    def on_disconnected(self, call: WorkerCall, code: int, reason: str) -> None:
        call.state = "DISCONNECTED"
        if call.role == Role.PARK and call.orbit is not None and not call.ended_reported:
            if self.by_orbit.get(call.orbit) is call:
                del self.by_orbit[call.orbit]
            call.ended_reported = True
            why = call.transferring or "caller-hangup"
            self.send("ended", orbit=call.orbit, call=call.handle, reason=why)
            self._hang_up_bridged(call)
        elif call.role == Role.RINGBACK and call.orbit is not None:
            if call.ring_deadline is not None:  # never answered
                result = "no-answer" if code in (408, 480, 487) or call.ring_deadline <= time.monotonic() else "failed"
                call.ring_deadline = None
                self.send("ringback_result", orbit=call.orbit, result=result, code=code, reason=reason)
            else:
                self._hang_up_bridged(call)
        elif call.role == Role.RETRIEVER:
            if call.bridge_peer is not None:
                self._hang_up_bridged(call)
            elif call.peer is not None and call.peer.transferring is None and not call.confirmed:
                # the retriever gave up before being connected: the call stays parked
                self.send("ended", call=call.handle, reason="retriever-gone")
        elif call.role == Role.TAKEOVER and call.orbit is not None:
            order = call.retry_direct
            if order is not None and code in EDGE_ROUTE_FAILURES:
                # the edge could not reach the caller (or is gone): straight to its Contact
                log.warning(
                    "takeover of orbit %s through the edge failed (%d %s); sending it direct", call.orbit, code, reason
                )
                self.pump.defer(lambda: self.take_over(order, via_edge=False))
                return
            self.send("takeover_result", orbit=call.orbit, ok=False, code=code, reason=f"{code} {reason}".strip())

    def _hang_up_bridged(self, call: WorkerCall) -> None:
        """After ``call`` ended: hang up the leg bridged to it, if any (deferred)."""
        if call.bridge_peer is not None:
            self.pump.defer(functools.partial(hangup, call.bridge_peer))

    def on_media(self, call: WorkerCall) -> None:
        info = call.getInfo()
        # Answered sendonly (music only flows out), the stream is "local hold" yet has a port.
        up = any(
            mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status in AUDIO_UP and mi.audioConfSlot >= 0 for mi in info.media
        )
        call.media_up = up
        if not up:
            return
        if call.bridge_peer is None and (self.announcer.start(call) or self.announcer.busy(call.handle)):
            return  # the music starts when the announcement has played (announcements_done)
        if call.role == Role.ANNOUNCE:  # a call-back with nothing (more) to say
            self.pump.defer(functools.partial(hangup, call))
            return
        if call.role in (Role.PARK, Role.TAKEOVER) and call.bridge_peer is None and self.music.wanted.get(call.handle):
            self.music.start(call)
        if call.bridge_peer is not None and call.bridge_peer.media_up:
            connect_audio(call, call.bridge_peer)

    # -- handing the parked caller over --------------------------------------------------------------

    def hand_over(self, parked: WorkerCall, leg: WorkerCall, *, reason: str, replaces: bool | None = None) -> None:
        """Give the parked caller to ``leg``'s peer: REFER with Replaces, or bridge here."""
        if replaces is None:
            replaces = bool(parked.dialog.remote_supports_replaces and leg.dialog.remote_supports_replaces)
        tags = leg.tags
        contact = leg.remote_contact()
        if replaces and tags is not None and contact:
            parked.transferring = reason
            parked.handed_to = leg.handle
            leg.peer = parked
            refer_to = refer_to_with_replaces(contact, tags.replaces_for_peer())
            try:
                parked.xfer(refer_to, op_param())
                return
            except pj.Error as exc:
                log.warning("REFER with Replaces failed (%s); bridging instead", exc)
                parked.transferring = None
        self.bridge(parked, leg, reason)

    def bridge(self, parked: WorkerCall, leg: WorkerCall, reason: str, *, reinvite_after_s: float = 0.0) -> None:
        self.announcer.forget(parked.handle)
        self.music.stop(parked)
        parked.bridge_peer = leg
        leg.bridge_peer = parked
        parked.transferring = reason
        # The park leg was answered sendonly (music only): its stream does not decode and
        # the caller (recvonly) may not send at all. Offer sendrecv again; on_media connects
        # the audio once the new SDP is active.
        if reinvite_after_s > 0:
            self.pump.call_later(reinvite_after_s, lambda: _sendrecv(parked))
        else:
            _sendrecv(parked)
        if parked.media_up and leg.media_up:
            connect_audio(parked, leg)
        if parked.orbit is not None and not parked.ended_reported:
            parked.ended_reported = True
            self.by_orbit.pop(parked.orbit, None)
            self.send("ended", orbit=parked.orbit, call=leg.handle, reason=reason)

    def on_transfer_status(self, call: WorkerCall, prm: Any) -> None:
        code = int(prm.statusCode)
        if not prm.finalNotify and code < 300:
            return
        if 200 <= code < 300:
            reason = call.transferring or "retrieved"
            if call.orbit is not None and not call.ended_reported:
                call.ended_reported = True
                self.by_orbit.pop(call.orbit, None)
                # name the leg we handed over to: its BYE may have ended (and buried) it already
                self.send("ended", orbit=call.orbit, call=call.handed_to or call.handle, reason=reason)
            self.pump.defer(lambda: hangup(call))
            return
        # The caller refused or failed the REFER: bridge a waiting leg, or give up.
        why = call.transferring
        call.transferring = None
        leg = next((c for c in self.calls.values() if c.peer is call and c.state != "DISCONNECTED"), None)
        if why == "forwarded" or leg is None:
            call.transferring = "disconnected"
            self.pump.defer(lambda: hangup(call))
        else:
            # a caller whose transfer failed resumes the call by itself (Linphone does, at
            # once): let its re-INVITE go first, or the two cross (491 both ways, RFC 3261 14.1)
            self.bridge(call, leg, why or "retrieved", reinvite_after_s=random.uniform(0.5, 1.5))

    def on_replace_request(self, call: WorkerCall, prm: Any) -> None:
        """An attended park: the caller's INVITE/Replaces takes over the parker's dialog."""
        if self.untrusted(str(prm.rdata.srcAddress), "INVITE/Replaces"):
            prm.statusCode, prm.reason = UNTRUSTED
            return
        new_call = self.adopt(WorkerCall(self, self.direct, role=Role.PARK))
        new_call.observe_incoming(str(prm.rdata.wholeMsg))
        new_call.orbit = call.orbit
        self.music.wanted[new_call.handle] = self.music.wanted.get(call.handle, True)
        self.music.follow(new_call.handle, self.music.homes.get(call.handle))
        prm.newCall = new_call

    def on_replaced(self, call: WorkerCall, prm: Any) -> None:
        new_call = next((c for c in self.calls.values() if c.getId() == int(prm.newCallId) and c is not call), None)
        if new_call is None:
            new_call = self.adopt(WorkerCall(self, self.direct, int(prm.newCallId), role=Role.PARK))
            prm.newCall = new_call
        new_call.role = Role.PARK
        new_call.orbit = call.orbit
        call.role = Role.REPLACED
        if call.orbit is not None:
            self.by_orbit[call.orbit] = new_call
            self.pump.defer(lambda: self._redialog(new_call))

    def _redialog(self, call: WorkerCall) -> None:
        if call.orbit is not None and call.state != "DISCONNECTED":
            self.send("redialog", orbit=call.orbit, call=call.handle, dialog=call_dialog(call))

    # -- commands from the supervisor ---------------------------------------------------------------

    def disconnect(self, orbit: str) -> None:
        """Hang up the parked caller of ``orbit`` (reported ``disconnected``)."""
        call = self.by_orbit.get(orbit)
        if call is not None:
            call.transferring = "disconnected"
            hangup(call)

    def release(self, orbit: str) -> None:
        """Hang up the parked caller of ``orbit`` without reporting it ended."""
        call = self.by_orbit.pop(orbit, None)
        if call is not None:
            call.ended_reported = True
            hangup(call)

    def ringback(self, orbit: str, parker_uri: str, ring_time_s: float) -> None:
        parked = self.by_orbit.get(orbit)
        if parked is None:
            self.send("ringback_result", orbit=orbit, result="failed", reason="not held here")
            return
        if self.free_slots() < 1:
            self.send("ringback_result", orbit=orbit, result="failed", reason="no free slot")
            return
        leg = self.adopt(WorkerCall(self, self.outgoing_account(), role=Role.RINGBACK))
        leg.orbit = orbit
        leg.peer = parked
        leg.ring_deadline = time.monotonic() + ring_time_s
        try:
            leg.makeCall(parker_uri, op_param(headers={"X-Callpark-Orbit": orbit, "X-Callpark-Ringback": "1"}))
        except pj.Error as exc:
            leg.ring_deadline = None
            leg.state = "DISCONNECTED"
            self.send("ringback_result", orbit=orbit, result="failed", reason=str(exc.info()))

    def check_ring_timers(self) -> None:
        now = time.monotonic()
        for call in list(self.calls.values()):
            timed = call.role in (Role.RINGBACK, Role.ANNOUNCE) and call.ring_deadline is not None
            if timed and call.ring_deadline is not None and call.ring_deadline <= now:
                hangup(call)

    def announcements_done(self) -> None:
        """After an announcement: the parked call gets its music, a call-back is hung up."""
        for handle in self.announcer.finished():
            call = self.calls.get(handle)
            if call is None or call.state == "DISCONNECTED":
                continue
            if call.role == Role.ANNOUNCE:
                hangup(call)
            elif call.bridge_peer is None and self.music.wanted.get(handle):
                self.music.start(call)

    def announce_call(self, uri: str, orbit: str, path: str, ring_time_s: float) -> None:
        """Call ``uri`` (a blind parker), say where its call is parked, hang up (needs a free slot)."""
        if self.free_slots() < 2:  # keep the spare slot for a retrieval or ringback
            log.info("orbit %s: no slot to call the parker back with the announcement", orbit)
            return
        leg = self.adopt(WorkerCall(self, self.outgoing_account(), role=Role.ANNOUNCE))
        leg.orbit = orbit
        leg.ring_deadline = time.monotonic() + ring_time_s
        self.announcer.want(leg.handle, path)
        try:
            leg.makeCall(uri, op_param(headers={"X-Callpark-Orbit": orbit, "X-Callpark-Announce": "1"}))
        except pj.Error as exc:
            leg.state = "DISCONNECTED"
            log.warning("orbit %s: cannot call the parker back: %s", orbit, exc.info())

    def forward(self, orbit: str, uri: str) -> None:
        call = self.by_orbit.get(orbit)
        if call is None:
            return
        call.transferring = "forwarded"
        try:
            call.xfer(uri, op_param())
        except pj.Error:
            call.transferring = "disconnected"
            hangup(call)

    def take_over(self, msg: Message, *, via_edge: bool | None = None) -> None:
        """INVITE the caller with Replaces (see :func:`invite_replacing`)."""
        invite_replacing(self, msg, self.edge is not None if via_edge is None else via_edge)


def invite_replacing(control: CallControl, msg: Message, through_edge: bool) -> None:
    """INVITE the caller with Replaces; refused (``full``, not lost) when every slot is taken.

    Through the edge when the node has one (the default): the edge declines the Replaces of a
    dialog it saw a BYE end (a caller who hung up while its holder was dead is not called
    back; see the edge's route[REPLACES_ENDED]). When the edge cannot route it
    (:data:`EDGE_ROUTE_FAILURES`) the INVITE goes once more, straight to the caller's Contact.
    """
    orbit = str(msg["orbit"])
    dialog = msg["dialog"]
    if control.free_slots() < 1:
        control.send("takeover_result", orbit=orbit, ok=False, full=True, reason="full: no free call slot")
        return
    call = control.adopt(WorkerCall(control, control.edge if through_edge else control.direct, role=Role.TAKEOVER))
    call.retry_direct = msg if through_edge else None
    call.orbit = orbit
    control.music.wanted[call.handle] = bool(msg.get("music", True))
    control.music.follow(call.handle, msg.get("music_path"))
    try:
        replaces = replaces_value(
            str(dialog["call_id"]), to_tag=str(dialog["remote_tag"]), from_tag=str(dialog["local_tag"])
        )
        prm = op_param(headers={"Replaces": replaces})
        prm.txOption.localUri = orbit_uri(str(control.direct.getInfo().uri), orbit)
        call.makeCall(str(dialog["remote_contact"]), prm)
    except (pj.Error, ValueError, KeyError) as exc:
        call.state = "DISCONNECTED"
        reason = exc.info() if isinstance(exc, pj.Error) else str(exc)
        control.send("takeover_result", orbit=orbit, ok=False, reason=f"cannot send INVITE/Replaces: {reason}")


EDGE_ROUTE_FAILURES = frozenset({404, 408, 477, 500, 502, 503, 504})
"""Answers to a takeover sent through the edge that mean the edge could not route it (not the
caller's refusal: 481 and 603 are final): the INVITE is sent again straight to the Contact."""


def orbit_uri(account_uri: str, orbit: str) -> str:
    """``sip:orbit-<orbit>@<host>`` from our account's URI: the From of an INVITE with Replaces.

    Not the park URI the caller dialled: liblinphone refuses an INVITE/Replaces whose From
    equals the remote URI of a call it already has ("486 Busy - duplicated call").
    """
    host = account_uri.strip("<>").split("@", 1)[-1].split(";", 1)[0].rstrip(">")
    user = orbit.replace("#", "%23")
    return f"sip:orbit-{user}@{host}"


def call_dialog(call: WorkerCall) -> dict[str, Any]:
    """The dialog of ``call`` as the supervisor stores it (``records.Dialog``), as JSON."""
    tags = call.tags
    dialog = Dialog(
        call_id=tags.call_id if tags else (call.dialog.call_id or ""),
        local_tag=tags.local_tag if tags else (call.dialog.local_tag or ""),
        remote_tag=tags.remote_tag if tags else (call.dialog.remote_tag or ""),
        remote_contact=contact_text(call.remote_contact()),
        remote_uri=contact_text(str(call.getInfo().remoteUri)),
        supports_replaces=bool(call.dialog.remote_supports_replaces),
    )
    return dialog_json(dialog)


def hangup(call: WorkerCall) -> None:
    """Hang ``call`` up unless it already ended (errors ignored)."""
    with contextlib.suppress(pj.Error):
        if call.state != "DISCONNECTED":
            call.hangup(op_param())


def _sendrecv(call: WorkerCall) -> None:
    """re-INVITE ``call`` with media direction sendrecv (undoes the sendonly answer)."""
    prm = op_param()
    prm.opt.flag |= pj.PJSUA_CALL_SET_MEDIA_DIR
    prm.opt.mediaDir.append(pj.PJMEDIA_DIR_ENCODING_DECODING)
    try:
        call.reinvite(prm)
    except pj.Error as exc:
        log.warning("re-INVITE to sendrecv failed (%s); the retriever may hear silence", exc.info())


def park_answer_sdp(sdp: str, orbit: str) -> str | None:
    """Our SDP answer made sendonly (music flows out only), with the orbit as a session attribute.

    None when the SDP does not have the expected shape (then pjsua's own sendonly answer is used).
    """
    if "\r\nt=" not in sdp or "\r\nm=audio" not in sdp:
        return None
    for direction in ("a=sendrecv", "a=recvonly", "a=inactive"):
        sdp = sdp.replace(f"\r\n{direction}\r\n", "\r\na=sendonly\r\n")
    if "a=sendonly" not in sdp:
        sdp = sdp.rstrip("\r\n") + "\r\na=sendonly\r\n"
    head, sep, rest = sdp.partition("\r\nt=")
    if "\r\n" not in rest:
        rest += "\r\n"  # the t= line was the last one, without its CRLF
    line_end = rest.index("\r\n") + 2
    return f"{head}{sep}{rest[:line_end]}a=x-callpark-orbit:{orbit}\r\n{rest[line_end:]}"


def contact_text(value: str | None) -> str:
    """The URI inside a Contact (or From) header value (keeps the port)."""
    if not value:
        return ""
    text = value.strip()
    if "<" in text and ">" in text:
        return text[text.index("<") + 1 : text.index(">")]
    return text.split(";", 1)[0]


def _quote_safe(text: str) -> str:
    return text.replace('"', "'").replace("\\", "/")[:200]
