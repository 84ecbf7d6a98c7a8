"""The park node worker: SIP calls and music on hold, decisions from the supervisor.

One process, one pjsua2 endpoint (pjsua is a singleton), at most four calls. All
pjsua2 work happens on the main thread inside the pump; a reader thread queues the
supervisor's messages and wakes the pump. The worker never talks to etcd and never
decides on its own whether a call is parked: it asks (``park``/``retrieve``), keeps
pumping, and acts on the ``reply``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import itertools
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pjsua2 as pj

from callpark.node.protocol import Channel, ChannelClosed, Message
from callpark.peers import TrustedPeers
from callpark.sip.call import TrackedCall, event_message
from callpark.sip.endpoint import (
    PJSUA_MAX_CALLS,
    AccountSettings,
    EndpointConfig,
    MediaTuning,
    SipEndpoint,
    account_config,
    op_param,
)
from callpark.sip.message import (
    SipParseError,
    parse_message,
    parse_sip_uri,
    refer_to_with_replaces,
    replaces_value,
)

log = logging.getLogger("callpark.node.worker")

ORBIT_CHARS = set("0123456789*#")
SOURCE_HEADER = "X-Callpark-Source"  # the original source, added by the edge (see docs/ARCHITECTURE.md)
UNTRUSTED = (403, "Forbidden: untrusted peer")
AUDIO_UP = (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_LOCAL_HOLD, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD)


def orbit_of(user: str | None) -> str | None:
    """The orbit a request-user names (``%2A``/``%23`` decoded), or None."""
    if not user:
        return None
    text = user.replace("%2A", "*").replace("%2a", "*").replace("%23", "#")
    if text and set(text) <= ORBIT_CHARS and text.lstrip("*#").isdigit():
        return text
    return None


class Role:
    PARK = "park"  # a caller being parked or held on an orbit
    RETRIEVER = "retriever"
    RINGBACK = "ringback"  # our call to the parker
    TAKEOVER = "takeover"  # INVITE with Replaces to a parked caller
    REPLACED = "replaced"  # a dialog that another one replaced (attended park)
    REJECTED = "rejected"


class WorkerCall(TrackedCall):
    """A call of this worker with its role and the orbit it belongs to."""

    def __init__(self, worker: Worker, acc: Any, call_id: int = pj.PJSUA_INVALID_ID, *, role: str) -> None:
        super().__init__(acc, call_id)
        self.worker = worker
        self.role = role
        self.orbit: str | None = None
        self.handle = f"c{next(worker.handles)}"
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

    # -- callbacks (all on the pump thread) ----------------------------------------------------

    def onCallState(self, prm: Any) -> None:
        super().onCallState(prm)
        self.worker.guard("onCallState", self._on_state)

    def _on_state(self) -> None:
        info = self.getInfo()
        self.state = str(info.stateText)
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED and not self.confirmed:
            self.confirmed = True
            self.worker.on_confirmed(self)
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.worker.on_disconnected(self, int(info.lastStatusCode), str(info.lastReason))

    def onCallMediaState(self, prm: Any) -> None:
        self.worker.guard("onCallMediaState", self.worker.on_media, self)

    def onCallSdpCreated(self, prm: Any) -> None:
        # pjsua builds our SDP answer when the INVITE arrives, before the orbit is chosen:
        # keep it, so the park answer can carry it with the orbit (see Worker.on_reply).
        self.created_sdp = str(prm.sdp.wholeSdp)

    def onCallTransferRequest(self, prm: Any) -> None:
        # A parked caller or retriever may not make the park node call anyone.
        prm.statusCode = 603

    def onCallTransferStatus(self, prm: Any) -> None:
        self.worker.guard("onCallTransferStatus", self.worker.on_transfer_status, self, prm)

    def onCallReplaceRequest(self, prm: Any) -> None:
        self.worker.guard("onCallReplaceRequest", self.worker.on_replace_request, self, prm)

    def onCallReplaced(self, prm: Any) -> None:
        self.worker.guard("onCallReplaced", self.worker.on_replaced, self, prm)


class WorkerAccount(pj.Account):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def onIncomingCall(self, prm: Any) -> None:
        self.worker.guard("onIncomingCall", self.worker.on_incoming, self, prm)


class Worker:
    """State and handlers of the worker process (pump thread only, except ``inbox``)."""

    def __init__(self, args: argparse.Namespace, channel: Channel) -> None:
        self.args = args
        self.channel = channel
        self.index = args.index
        self.endpoint = SipEndpoint(
            EndpointConfig(
                sip_port=args.sip_port,
                host=args.host,
                tuning=MediaTuning(audio_frame_ptime=40, ptime=40),
                user_agent=f"callpark-node/{args.node}/w{args.index}",
            )
        )
        self.inbox: queue.Queue[Message | None] = queue.Queue()
        self.handles = itertools.count(1)
        self.calls: dict[str, WorkerCall] = {}
        self.by_orbit: dict[str, WorkerCall] = {}
        self.pending: dict[int, WorkerCall] = {}
        self.requests = itertools.count(1)
        self.graveyard: list[WorkerCall] = []
        self.media: dict[str, Any] = {}
        self.music_path: str | None = args.music
        self.music_on: dict[str, bool] = {}
        self.deferred: list[Callable[[], None]] = []
        self.running = True
        self.accounts: list[Any] = []
        self.direct: Any = None
        self.edge: Any = None
        self.buddies: dict[str, Any] = {}
        self.last_slots = -1
        self.trusted = TrustedPeers.parse(args.trusted_peers)

    # -- plumbing --------------------------------------------------------------------------------

    def guard(self, where: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a callback body; count and report exceptions (pjsua2 would swallow them)."""
        try:
            return fn(*args)
        except Exception as exc:
            log.exception("%s failed", where)
            self.send("callback_error", error=f"{where}: {exc.__class__.__name__}: {exc}")
            return None

    def send(self, op: str, **fields: Any) -> None:
        try:
            self.channel.send(op, **fields)
        except ChannelClosed:
            self.running = False

    def defer(self, fn: Callable[[], None]) -> None:
        self.deferred.append(fn)

    def adopt(self, call: WorkerCall) -> WorkerCall:
        self.calls[call.handle] = call
        return call

    def free_slots(self) -> int:
        active = sum(1 for c in self.calls.values() if c.state != "DISCONNECTED")
        return max(0, PJSUA_MAX_CALLS - active)

    def report_slots(self) -> None:
        free = self.free_slots()
        if free != self.last_slots:
            self.last_slots = free
            self.send("slots", free=free)

    def read_channel(self) -> None:
        while True:
            try:
                msg = self.channel.receive()
            except ChannelClosed:
                self.inbox.put(None)
                self.endpoint.wake()
                return
            self.inbox.put(msg)
            self.endpoint.wake()

    # -- main loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        self.endpoint.start()
        self.direct = WorkerAccount(self)
        settings = AccountSettings(
            user="park", sip_port=self.args.sip_port, rtp_port=self.args.rtp_port, host=self.args.host
        )
        self.direct.create(account_config(settings), True)
        self.accounts.append(self.direct)
        if self.args.proxy:
            self.edge = WorkerAccount(self)
            edge_settings = AccountSettings(
                user="park",
                sip_port=self.args.sip_port,
                rtp_port=self.args.rtp_port,
                host=self.args.host,
                proxy=self.args.proxy,
                domain=self.args.domain,
            )
            self.edge.create(account_config(edge_settings), False)
            self.accounts.append(self.edge)
        if self.music_path:
            self.load_music(self.music_path)
        threading.Thread(target=self.read_channel, name="channel", daemon=True).start()
        self.send("ready", sip=f"{self.args.host}:{self.args.sip_port}", slots=self.free_slots())
        while self.running:
            self.endpoint.pump(50)
            self.drain_inbox()
            self.check_ring_timers()
            while self.deferred:
                self.deferred.pop(0)()
            self.bury()
            self.report_slots()
        self.shutdown()
        return 0

    def drain_inbox(self) -> None:
        while True:
            try:
                msg = self.inbox.get_nowait()
            except queue.Empty:
                return
            if msg is None:
                # The supervisor is gone (crashed or killed). Its lease will expire and
                # another node takes our calls over with INVITE/Replaces; a BYE now would
                # lose them, so leave without signalling (as a crashed host would).
                log.warning("supervisor channel closed; exiting without hanging up %d call(s)", len(self.by_orbit))
                os._exit(0)
            self.guard(f"command {msg.get('op')}", self.on_command, msg)

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
        if len(self.graveyard) > 8:
            live = {c.getId() for c in self.calls.values()}
            keep = [c for c in self.graveyard if c.getId() in live]
            if len(keep) < len(self.graveyard):
                self.graveyard = keep
                gc.collect()

    def shutdown(self) -> None:
        for orbit, call in list(self.by_orbit.items()):
            if call.state != "DISCONNECTED" and not call.ended_reported:
                call.ended_reported = True
                self.send("ended", orbit=orbit, call=call.handle, reason="disconnected")
        self.by_orbit.clear()
        self.pending.clear()
        self.graveyard.clear()
        self.buddies.clear()
        self.endpoint.shutdown(calls=self.calls, accounts=self.accounts, media=self.media)

    # -- music -----------------------------------------------------------------------------------------

    def load_music(self, path: str) -> None:
        if not Path(path).exists():
            log.error("music file %s does not exist", path)
            return
        player = pj.AudioMediaPlayer()
        player.createPlayer(path, 0)
        old = self.media.get("music")
        self.media["music"] = player
        self.music_path = path
        for call in self.by_orbit.values():
            if call.media_up and self.music_on.get(call.handle, True):
                self.start_music(call)
        if old is not None:
            self.graveyard_media(old)

    def graveyard_media(self, player: Any) -> None:
        self.media[f"old{next(self.handles)}"] = player

    def start_music(self, call: WorkerCall) -> None:
        player = self.media.get("music")
        if player is None:
            return
        with contextlib.suppress(pj.Error):
            player.startTransmit(call.getAudioMedia(-1))

    def stop_music(self, call: WorkerCall) -> None:
        player = self.media.get("music")
        if player is None:
            return
        with contextlib.suppress(pj.Error):
            player.stopTransmit(call.getAudioMedia(-1))

    def on_media(self, call: WorkerCall) -> None:
        info = call.getInfo()
        # Answered sendonly (music only flows out), the stream is "local hold" yet has a port.
        up = any(
            mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status in AUDIO_UP and mi.audioConfSlot >= 0 for mi in info.media
        )
        call.media_up = up
        if not up:
            return
        if call.role in (Role.PARK, Role.TAKEOVER) and call.bridge_peer is None and self.music_on.get(call.handle):
            self.start_music(call)
        if call.bridge_peer is not None and call.bridge_peer.media_up:
            self.connect_audio(call, call.bridge_peer)

    def connect_audio(self, a: WorkerCall, b: WorkerCall) -> None:
        with contextlib.suppress(pj.Error):
            am, bm = a.getAudioMedia(-1), b.getAudioMedia(-1)
            am.startTransmit(bm)
            bm.startTransmit(am)

    # -- incoming requests ------------------------------------------------------------------------------

    def untrusted(self, peer: str, what: str) -> bool:
        """True (and reported to the supervisor) when ``peer`` is not a trusted peer."""
        if self.trusted.allows(peer):
            return False
        self.send("untrusted", peer=peer, what=what)
        return True

    def on_incoming(self, acc: Any, prm: Any) -> None:
        raw = str(prm.rdata.wholeMsg)
        peer = str(prm.rdata.srcAddress)
        call = self.adopt(WorkerCall(self, acc, int(prm.callId), role=Role.PARK))
        call.observe_incoming(raw)
        if self.untrusted(peer, "INVITE"):
            self.reject(call, *UNTRUSTED, f"{peer} is not a trusted peer of this park node")
            return
        try:
            msg = parse_message(raw)
            ruri = parse_sip_uri(msg.start_line.split(" ")[1])
        except (SipParseError, IndexError, ValueError):
            self.reject(call, 400, "Bad Request", "malformed request URI")
            return
        user = ruri.user or ""
        target = orbit_of(user)
        info = {
            "call": call.handle,
            "call_id": call.dialog.call_id or "",
            "remote_tag": call.dialog.remote_tag or "",
            "contact": _contact_text(msg.header("Contact")),
            "from_uri": _from_uri(msg.header("From")),
            "referred_by": call.dialog.remote_referred_by,
            "supports_replaces": bool(call.dialog.remote_supports_replaces),
            "park_id": ruri.param("park-id"),
            "free": self.free_slots(),
            "peer": peer,
            "origin": msg.header(SOURCE_HEADER),
        }
        if user == "park" or user.startswith("park-"):
            req = next(self.requests)
            self.pending[req] = call
            self.send("park", req=req, target="park", **info)
        elif target is not None:
            req = next(self.requests)
            self.pending[req] = call
            call.role = Role.RETRIEVER
            self.send("retrieve", req=req, orbit=target, **info)
        else:
            self.reject(call, 404, "Not Found", f"{user or '(empty)'} is neither the park service nor an orbit")

    def reject(
        self, call: WorkerCall, code: int, reason: str, warning: str, extra: dict[str, str] | None = None
    ) -> None:
        call.role = Role.REJECTED
        headers = {"Warning": f'399 callpark "{_quote_safe(warning)}"', **(extra or {})}
        with contextlib.suppress(pj.Error):
            call.answer(op_param(code, headers=headers, reason=reason))

    def on_reply(self, msg: Message) -> None:
        call = self.pending.pop(int(msg["req"]), None)
        if call is None or call.state == "DISCONNECTED":
            if call is not None and msg.get("action") == "answer":
                # the caller gave up while we asked: free the orbit we were given
                self.send("ended", orbit=msg.get("orbit"), call=call.handle, reason="caller-hangup")
            return
        action = msg["action"]
        if action == "answer":
            orbit = str(msg["orbit"])
            call.role = Role.PARK
            call.orbit = orbit
            self.by_orbit[orbit] = call
            self.music_on[call.handle] = bool(msg.get("music", True))
            headers = {"X-Callpark-Orbit": orbit, "X-Callpark-Park-Id": str(msg.get("park_id", ""))}
            if msg.get("retrieve_uri"):
                headers["X-Callpark-Retrieve-Uri"] = f"<{msg['retrieve_uri']}>"
            answer_sdp = _park_answer_sdp(call.created_sdp, orbit)
            if answer_sdp is None:
                call.answer(op_param(200, headers=headers, sendonly=True))
            else:
                prm = op_param(200, headers=headers)
                prm.sdp.wholeSdp = answer_sdp
                call.answer(prm)
        elif action == "connect":
            self.connect_retriever(call, str(msg["orbit"]), bool(msg.get("replaces")))
        elif action == "redirect":
            call.role = Role.REJECTED
            call.answer(op_param(302, headers={"Contact": f"<{msg['contact']}>"}, reason="Moved Temporarily"))
        else:
            retry = msg.get("retry_after")
            extra = {"Retry-After": str(int(retry))} if retry else None
            self.reject(
                call, int(msg.get("code", 500)), str(msg.get("reason", "Error")), str(msg.get("warning", "")), extra
            )

    # -- call progress ----------------------------------------------------------------------------------

    def dialog_json(self, call: WorkerCall) -> dict[str, Any]:
        tags = call.tags
        return {
            "call_id": tags.call_id if tags else (call.dialog.call_id or ""),
            "local_tag": tags.local_tag if tags else (call.dialog.local_tag or ""),
            "remote_tag": tags.remote_tag if tags else (call.dialog.remote_tag or ""),
            "remote_contact": _contact_text(call.remote_contact()),
            "remote_uri": _from_uri(str(call.getInfo().remoteUri)),
            "supports_replaces": bool(call.dialog.remote_supports_replaces),
        }

    def on_confirmed(self, call: WorkerCall) -> None:
        if call.role == Role.PARK and call.orbit is not None:
            self.send("answered", call=call.handle, orbit=call.orbit, dialog=self.dialog_json(call))
        elif call.role == Role.PARK and call.orbit is None and call.peer is not None:
            pass
        elif call.role == Role.RINGBACK and call.peer is not None:
            call.ring_deadline = None
            self.send("ringback_result", orbit=call.orbit, result="answered")
            self.hand_over(call.peer, call, reason="rang-back")
        elif call.role == Role.RETRIEVER and call.peer is not None:
            self.hand_over(call.peer, call, reason="retrieved", replaces=call.replaces_ok)
        elif call.role == Role.TAKEOVER and call.orbit is not None:
            call.role = Role.PARK
            self.by_orbit[call.orbit] = call
            self.send("takeover_result", orbit=call.orbit, ok=True, dialog=self.dialog_json(call))

    def on_disconnected(self, call: WorkerCall, code: int, reason: str) -> None:
        call.state = "DISCONNECTED"
        if call.role == Role.PARK and call.orbit is not None and not call.ended_reported:
            if self.by_orbit.get(call.orbit) is call:
                del self.by_orbit[call.orbit]
            call.ended_reported = True
            why = call.transferring or "caller-hangup"
            self.send("ended", orbit=call.orbit, call=call.handle, reason=why)
            if call.bridge_peer is not None:
                self.defer(functools.partial(_hangup, call.bridge_peer))
        elif call.role == Role.RINGBACK and call.orbit is not None:
            if call.ring_deadline is not None:  # never answered
                result = "no-answer" if code in (408, 480, 487) or call.ring_deadline <= time.monotonic() else "failed"
                call.ring_deadline = None
                self.send("ringback_result", orbit=call.orbit, result=result, code=code, reason=reason)
            elif call.bridge_peer is not None:
                self.defer(functools.partial(_hangup, call.bridge_peer))
        elif call.role == Role.RETRIEVER:
            if call.bridge_peer is not None:
                self.defer(functools.partial(_hangup, call.bridge_peer))
            elif call.peer is not None and call.peer.transferring is None and not call.confirmed:
                # the retriever gave up before being connected: the call stays parked
                self.send("ended", call=call.handle, reason="retriever-gone")
        elif call.role == Role.TAKEOVER and call.orbit is not None:
            self.send("takeover_result", orbit=call.orbit, ok=False, reason=f"{code} {reason}".strip())

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

    def bridge(self, parked: WorkerCall, leg: WorkerCall, reason: str) -> None:
        self.stop_music(parked)
        parked.bridge_peer = leg
        leg.bridge_peer = parked
        parked.transferring = reason
        # The park leg was answered sendonly (music only): its stream does not decode and
        # the caller (recvonly) may not send at all. Offer sendrecv again; on_media connects
        # the audio once the new SDP is active.
        _sendrecv(parked)
        if parked.media_up and leg.media_up:
            self.connect_audio(parked, leg)
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
            self.defer(lambda: _hangup(call))
            return
        # The caller refused or failed the REFER: bridge a waiting leg, or give up.
        why = call.transferring
        call.transferring = None
        leg = next((c for c in self.calls.values() if c.peer is call and c.state != "DISCONNECTED"), None)
        if why == "forwarded" or leg is None:
            call.transferring = "disconnected"
            self.defer(lambda: _hangup(call))
        else:
            self.bridge(call, leg, why or "retrieved")

    def on_replace_request(self, call: WorkerCall, prm: Any) -> None:
        """An attended park: the caller's INVITE/Replaces takes over the parker's dialog."""
        if self.untrusted(str(prm.rdata.srcAddress), "INVITE/Replaces"):
            prm.statusCode, prm.reason = UNTRUSTED
            return
        new_call = self.adopt(WorkerCall(self, self.direct, role=Role.PARK))
        new_call.observe_incoming(str(prm.rdata.wholeMsg))
        new_call.orbit = call.orbit
        self.music_on[new_call.handle] = self.music_on.get(call.handle, True)
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
            self.defer(lambda: self._redialog(new_call))

    def _redialog(self, call: WorkerCall) -> None:
        if call.orbit is not None and call.state != "DISCONNECTED":
            self.send("redialog", orbit=call.orbit, call=call.handle, dialog=self.dialog_json(call))

    def check_ring_timers(self) -> None:
        now = time.monotonic()
        for call in list(self.calls.values()):
            if call.role == Role.RINGBACK and call.ring_deadline is not None and call.ring_deadline <= now:
                _hangup(call)

    # -- commands from the supervisor -------------------------------------------------------------------------

    def on_command(self, msg: Message) -> None:
        op = msg["op"]
        if op == "reply":
            self.on_reply(msg)
        elif op == "notify":
            self.notify(str(msg["uri"]), str(msg.get("text", "")), msg)
        elif op == "ringback":
            self.ringback(str(msg["orbit"]), str(msg["parker_uri"]), float(msg.get("ring_time_s", 20)))
        elif op == "forward":
            self.forward(str(msg["orbit"]), str(msg["uri"]))
        elif op == "disconnect":
            call = self.by_orbit.get(str(msg["orbit"]))
            if call is not None:
                call.transferring = "disconnected"
                _hangup(call)
        elif op == "release":
            call = self.by_orbit.pop(str(msg["orbit"]), None)
            if call is not None:
                call.ended_reported = True
                _hangup(call)
        elif op == "takeover":
            self.take_over(msg)
        elif op == "music":
            self.load_music(str(msg["path"]))
        elif op == "shutdown":
            self.running = False
        else:
            log.warning("unknown command %r", op)

    def outgoing_account(self) -> Any:
        return self.edge if self.edge is not None else self.direct

    def notify(self, uri: str, text: str, msg: Message) -> None:
        buddy = self.buddies.get(uri)
        if buddy is None:
            cfg = pj.BuddyConfig()
            cfg.uri = uri
            cfg.subscribe = False
            buddy = pj.Buddy()
            buddy.create(self.outgoing_account(), cfg)
            self.buddies[uri] = buddy
        prm = pj.SendInstantMessageParam()
        prm.contentType = "text/plain"
        retrieve = str(msg.get("retrieve_uri", ""))
        prm.content = (
            f"{text}\r\norbit={msg.get('orbit')}\r\npark-id={msg.get('park_id')}\r\nretrieve-uri={retrieve}\r\n"
        )
        prm.txOption.headers.append(_header("X-Callpark-Orbit", str(msg.get("orbit"))))
        prm.txOption.headers.append(_header("X-Callpark-Park-Id", str(msg.get("park_id"))))
        if retrieve:
            prm.txOption.headers.append(_header("X-Callpark-Retrieve-Uri", f"<{retrieve}>"))
        buddy.sendInstantMessage(prm)

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

    def forward(self, orbit: str, uri: str) -> None:
        call = self.by_orbit.get(orbit)
        if call is None:
            return
        call.transferring = "forwarded"
        try:
            call.xfer(uri, op_param())
        except pj.Error:
            call.transferring = "disconnected"
            _hangup(call)

    def take_over(self, msg: Message) -> None:
        orbit = str(msg["orbit"])
        dialog = msg["dialog"]
        call = self.adopt(WorkerCall(self, self.direct, role=Role.TAKEOVER))
        call.orbit = orbit
        self.music_on[call.handle] = bool(msg.get("music", True))
        try:
            replaces = replaces_value(
                str(dialog["call_id"]), to_tag=str(dialog["remote_tag"]), from_tag=str(dialog["local_tag"])
            )
            call.makeCall(str(dialog["remote_contact"]), op_param(headers={"Replaces": replaces}))
        except (pj.Error, ValueError, KeyError) as exc:
            call.state = "DISCONNECTED"
            reason = exc.info() if isinstance(exc, pj.Error) else str(exc)
            self.send("takeover_result", orbit=orbit, ok=False, reason=f"cannot send INVITE/Replaces: {reason}")


def _sendrecv(call: WorkerCall) -> None:
    """re-INVITE ``call`` with media direction sendrecv (undoes the sendonly answer)."""
    prm = op_param()
    prm.opt.flag |= pj.PJSUA_CALL_SET_MEDIA_DIR
    prm.opt.mediaDir.append(pj.PJMEDIA_DIR_ENCODING_DECODING)
    try:
        call.reinvite(prm)
    except pj.Error as exc:
        log.warning("re-INVITE to sendrecv failed (%s); the retriever may hear silence", exc.info())


def _park_answer_sdp(sdp: str, orbit: str) -> str | None:
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


def _hangup(call: WorkerCall) -> None:
    with contextlib.suppress(pj.Error):
        if call.state != "DISCONNECTED":
            call.hangup(op_param())


def _header(name: str, value: str) -> Any:
    hdr = pj.SipHeader()
    hdr.hName = name
    hdr.hValue = value
    return hdr


def _contact_text(value: str | None) -> str:
    """The URI inside a Contact header value (keeps the port)."""
    if not value:
        return ""
    text = value.strip()
    if "<" in text and ">" in text:
        return text[text.index("<") + 1 : text.index(">")]
    return text.split(";", 1)[0]


def _from_uri(value: str | None) -> str:
    return _contact_text(value)


def _quote_safe(text: str) -> str:
    return text.replace('"', "'").replace("\\", "/")[:200]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="callpark.node.worker")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--node", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--sip-port", type=int, required=True)
    p.add_argument("--rtp-port", type=int, required=True)
    p.add_argument("--proxy")
    p.add_argument("--domain", default="callpark.test")
    p.add_argument("--music")
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--trusted-peers", default="127.0.0.0/8,::1/128", help="comma-separated addresses/networks")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format=f"%(asctime)s %(levelname)s worker{args.index}: %(message)s",
        stream=sys.stderr,
    )
    channel = Channel(socket.socket(fileno=args.fd))
    worker = Worker(args, channel)

    def on_term(signum: int, frame: Any) -> None:
        worker.running = False
        worker.endpoint.wake()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    code = worker.run()
    with contextlib.suppress(OSError):
        channel.close()
    return code


__all__ = ["event_message", "main", "orbit_of"]
