"""The worker's loop: pump pjsua2, dispatch the supervisor's messages and the incoming INVITEs.

All pjsua2 work happens on the main thread inside the pump (:mod:`callpark.sip.pump`); a
reader thread queues the supervisor's messages and wakes the pump. The worker never talks
to etcd and never decides on its own whether a call is parked: it asks (``park``/``retrieve``),
keeps pumping, and acts on the ``reply`` (:mod:`callpark.node.worker.calls` does the calls).

State is bounded: one pjsua Buddy per parker URI notified, at most ``MAX_BUDDIES`` (least
recently used evicted), at most ``MAX_PENDING`` requests awaiting a reply; per-call entries
(``CallControl.calls``, ``by_orbit``, the music's ``wanted``) go when the call ends.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
from collections.abc import Iterator
from typing import Any

import pjsua2 as pj

from callpark.errors import ValidationError
from callpark.model.orbits import parse_orbit
from callpark.node.protocol import Channel, ChannelClosed, Message
from callpark.node.worker.calls import UNTRUSTED, CallControl, Role, WorkerCall, contact_text
from callpark.node.worker.lru import LruMap
from callpark.node.worker.music import HoldMusic
from callpark.peers import TrustedPeers
from callpark.sip.endpoint import (
    AccountSettings,
    EndpointConfig,
    GuardedAccount,
    MediaTuning,
    SipEndpoint,
    account_config,
    op_param,
    sip_header,
)
from callpark.sip.message import SipParseError, parse_message, parse_sip_uri, unescape_orbit_user
from callpark.sip.pump import Pump

log = logging.getLogger("callpark.node.worker")

SOURCE_HEADER = "X-Callpark-Source"  # the original source, added by the edge (see docs/ARCHITECTURE.md)
PUMP_MS = 50
MAX_BUDDIES = 64  # pjsua Buddies (one per parker URI notified), least recently used evicted
MAX_PENDING = 64  # park/retrieve requests awaiting a reply; the oldest are dropped (never answered)


def orbit_of(user: str | None) -> str | None:
    """The orbit a request-user names (``%2A``/``%23`` decoded) by the Lync orbit rules, or None."""
    if not user:
        return None
    text = unescape_orbit_user(user)
    try:
        parse_orbit(text)
    except ValidationError:
        return None
    return text


class Worker:
    """The worker process: its endpoint, pump and accounts, and the supervisor's requests in flight.

    Pump thread only; the reader thread only posts to the pump.
    """

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
        self.pump: Pump[Message] = Pump(self.endpoint, max_wait_ms=PUMP_MS)
        handles = itertools.count(1)
        self.music = HoldMusic(args.music)
        trusted = TrustedPeers.parse(args.trusted_peers)
        self.control = CallControl(self.send, self.pump, self.music, trusted, handles)
        self.pending: dict[int, WorkerCall] = {}  # park/retrieve requests awaiting the reply
        self.requests = itertools.count(1)
        self.accounts: list[Any] = []
        self.buddies: LruMap[str, Any] = LruMap(MAX_BUDDIES)  # evicted Buddies are deleted by pjsua2's destructor
        self.last_slots = -1

    # -- plumbing --------------------------------------------------------------------------------

    def send(self, op: str, /, **fields: Any) -> None:
        """Send a message to the supervisor; a closed channel ends the loop."""
        try:
            self.channel.send(op, **fields)
        except ChannelClosed:
            self.pump.stop()

    def report_slots(self) -> None:
        free = self.control.free_slots()
        if free != self.last_slots:
            self.last_slots = free
            self.send("slots", free=free)

    # -- main loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        self.endpoint.start()
        self._create_accounts()
        if self.music.path:
            self.music.load(self.music.path, self.control.by_orbit.values())
        self.pump.start_reader(_channel_messages(self.channel), "channel")
        self.send("ready", sip=f"{self.args.host}:{self.args.sip_port}", slots=self.control.free_slots())
        self.pump.run(self._tick)
        self.shutdown()
        return 0

    def _create_accounts(self) -> None:
        args = self.args
        direct = GuardedAccount(self.control.guard, self.on_incoming)
        settings = AccountSettings(user="park", sip_port=args.sip_port, rtp_port=args.rtp_port, host=args.host)
        direct.create(account_config(settings), True)
        self.accounts.append(direct)
        self.control.direct = direct
        if args.proxy:
            edge = GuardedAccount(self.control.guard, self.on_incoming)
            edge_settings = AccountSettings(
                user="park",
                sip_port=args.sip_port,
                rtp_port=args.rtp_port,
                host=args.host,
                proxy=args.proxy,
                domain=args.domain,
            )
            edge.create(account_config(edge_settings), False)
            self.accounts.append(edge)
            self.control.edge = edge

    def _tick(self) -> None:
        self.drain_inbox()
        self.control.check_ring_timers()
        self.control.announcements_done()
        self.pump.run_deferred()
        self.control.bury()
        self.report_slots()

    def drain_inbox(self) -> None:
        for msg in self.pump.messages():
            if msg is None:
                # The supervisor is gone (crashed or killed). Its lease will expire and
                # another node takes our calls over with INVITE/Replaces; a BYE now would
                # lose them, so leave without signalling (as a crashed host would).
                log.warning(
                    "supervisor channel closed; exiting without hanging up %d call(s)", len(self.control.by_orbit)
                )
                os._exit(0)
            self.control.guard(f"command {msg.get('op')}", self.on_command, msg)

    def shutdown(self) -> None:
        self.control.forget_all()
        self.pending.clear()
        self.buddies.clear()
        self.endpoint.shutdown(calls=self.control.calls, accounts=self.accounts, media=self.music.media)

    # -- incoming requests ------------------------------------------------------------------------------

    def on_incoming(self, acc: Any, prm: Any) -> None:
        """A new INVITE: ask the supervisor to park it (``park``) or retrieve an orbit (``retrieve``)."""
        raw = str(prm.rdata.wholeMsg)
        peer = str(prm.rdata.srcAddress)
        call = self.control.adopt(WorkerCall(self.control, acc, int(prm.callId), role=Role.PARK))
        call.observe_incoming(raw)
        if self.control.untrusted(peer, "INVITE"):
            self.control.reject(call, *UNTRUSTED, f"{peer} is not a trusted peer of this park node")
            return
        try:
            msg = parse_message(raw)
            ruri = parse_sip_uri(msg.start_line.split(" ")[1])
        except (SipParseError, IndexError, ValueError):
            self.control.reject(call, 400, "Bad Request", "malformed request URI")
            return
        user = ruri.user or ""
        target = orbit_of(user)
        info = {
            "call": call.handle,
            "call_id": call.dialog.call_id or "",
            "remote_tag": call.dialog.remote_tag or "",
            "contact": contact_text(msg.header("Contact")),
            "from_uri": contact_text(msg.header("From")),
            "referred_by": call.dialog.remote_referred_by,
            "supports_replaces": bool(call.dialog.remote_supports_replaces),
            "park_id": ruri.param("park-id"),
            "free": self.control.free_slots(),
            "peer": peer,
            "origin": msg.header(SOURCE_HEADER),
        }
        if user == "park" or user.startswith("park-"):
            self._ring(call, info)
        elif target is not None:
            req = self._ask(call)
            call.role = Role.RETRIEVER
            self.send("retrieve", req=req, orbit=target, **info)
        else:
            self.control.reject(call, 404, "Not Found", f"{user or '(empty)'} is neither the park service nor an orbit")

    def _ring(self, call: WorkerCall, info: dict[str, Any]) -> None:
        """Send 180 Ringing, then ask the supervisor to park ``call`` with our To-tag in ``info``.

        The 180 fixes our dialog's local tag, so the record is written with a complete dialog
        from its first revision: a node that dies before the caller's ACK leaves a call another
        node can take over with INVITE/Replaces (found by the chaos suite: killed between the
        allocation and the ``answered`` update, the call was lost for want of a to-tag).
        pjsua sends an answer given inside ``onIncomingCall`` when the callback returns, so
        the request goes from the pump's next turn, once the 180 is out and observed.
        """
        with contextlib.suppress(pj.Error):
            call.answer(op_param(180))

        def ask() -> None:
            if call.state == "DISCONNECTED":
                return  # the caller gave up already: nothing to park
            self.send("park", req=self._ask(call), target="park", local_tag=call.dialog.local_tag or "", **info)

        self.pump.defer(ask)

    def _ask(self, call: WorkerCall) -> int:
        """A new request id; the supervisor's ``reply`` with it acts on ``call``."""
        req = next(self.requests)
        self.pending[req] = call
        while len(self.pending) > MAX_PENDING:  # a reply that never came: forget the oldest request
            del self.pending[next(iter(self.pending))]
        return req

    # -- commands from the supervisor -------------------------------------------------------------------------

    def on_command(self, msg: Message) -> None:
        op = msg["op"]
        if op == "reply":
            self.on_reply(msg)
        elif op == "notify":
            self.notify(str(msg["uri"]), str(msg.get("text", "")), msg)
        elif op == "ringback":
            self.control.ringback(str(msg["orbit"]), str(msg["parker_uri"]), float(msg.get("ring_time_s", 20)))
        elif op == "forward":
            self.control.forward(str(msg["orbit"]), str(msg["uri"]))
        elif op == "disconnect":
            self.control.disconnect(str(msg["orbit"]))
        elif op == "release":
            self.control.release(str(msg["orbit"]))
        elif op == "takeover":
            self.control.take_over(msg)
        elif op == "announce":
            self.control.announce_call(
                str(msg["uri"]), str(msg["orbit"]), str(msg["path"]), float(msg.get("ring_time_s", 20))
            )
        elif op == "music":
            self.music.load(str(msg["path"]), self.control.by_orbit.values())
        elif op == "shutdown":
            self.pump.stop()
        else:
            log.warning("unknown command %r", op)

    def on_reply(self, msg: Message) -> None:
        call = self.pending.pop(int(msg["req"]), None)
        if call is None or call.state == "DISCONNECTED":
            if call is not None and msg.get("action") == "answer":
                # the caller gave up while we asked: free the orbit we were given
                self.send("ended", orbit=msg.get("orbit"), call=call.handle, reason="caller-hangup")
            return
        action = msg["action"]
        if action == "answer":
            self.control.answer_park(call, msg)
        elif action == "connect":
            self.control.connect_retriever(call, str(msg["orbit"]), bool(msg.get("replaces")))
        elif action == "redirect":
            self.control.redirect(call, str(msg["contact"]))
        else:
            retry = msg.get("retry_after")
            extra = {"Retry-After": str(int(retry))} if retry else None
            self.control.reject(
                call, int(msg.get("code", 500)), str(msg.get("reason", "Error")), str(msg.get("warning", "")), extra
            )

    def notify(self, uri: str, text: str, msg: Message) -> None:
        """A SIP MESSAGE to the parker through the edge: the orbit (blind park) or a notice (``event``)."""
        buddy = self.buddies.get_or_create(uri, lambda: self._buddy(uri))
        prm = pj.SendInstantMessageParam()
        prm.contentType = "text/plain"
        retrieve = str(msg.get("retrieve_uri", ""))
        event = str(msg.get("event", ""))  # a parker notice (node/notify.py): retrieved, abandoned, ...
        lines = [text, f"orbit={msg.get('orbit')}", f"park-id={msg.get('park_id')}"]
        lines += [f"event={event}", f"by={msg.get('by', '')}"] if event else [f"retrieve-uri={retrieve}"]
        prm.content = "\r\n".join(lines) + "\r\n"
        prm.txOption.headers.append(sip_header("X-Callpark-Orbit", str(msg.get("orbit"))))
        prm.txOption.headers.append(sip_header("X-Callpark-Park-Id", str(msg.get("park_id"))))
        if event:
            prm.txOption.headers.append(sip_header("X-Callpark-Event", event))
        if retrieve:
            prm.txOption.headers.append(sip_header("X-Callpark-Retrieve-Uri", f"<{retrieve}>"))
        buddy.sendInstantMessage(prm)

    def _buddy(self, uri: str) -> Any:
        cfg = pj.BuddyConfig()
        cfg.uri = uri
        cfg.subscribe = False
        buddy = pj.Buddy()
        buddy.create(self.control.outgoing_account(), cfg)
        return buddy


def _channel_messages(channel: Channel) -> Iterator[Message]:
    """The supervisor's messages, until the channel closes."""
    while True:
        try:
            msg = channel.receive()
        except ChannelClosed:
            return
        yield msg
