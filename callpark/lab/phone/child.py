"""The softphone process: one pjsua2 endpoint, driven by JSON lines on stdin.

Run as ``python -m callpark.lab.phone --user NAME --sip-port P --rtp-port R [...]``. Every
stdin line is a command object ``{"id": ..., "cmd": "...", ...}``; every stdout line is
either a reply ``{"id": ..., "ok": true|false, ...}`` or an event ``{"event": "..."}``.
See :mod:`callpark.lab.phone.protocol` for the list. pjlib output never reaches stdout (fd 1
is redirected to stderr; the protocol uses a private duplicate of the original stdout).

All pjsua2 work happens on the main thread: it pumps ``libHandleEvents`` (callbacks run
there), then runs deferred actions, queued commands and timers. A reader thread only
queues stdin lines and wakes the pump with CRLFCRLF to our own SIP port.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import json
import logging
import os
import queue
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import pjsua2 as pj

from callpark import audio
from callpark.lab.phone import protocol
from callpark.sip.call import TrackedCall, event_message
from callpark.sip.endpoint import (
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
    refer_to_with_replaces,
)

log = logging.getLogger("callpark.lab.phone")

STATE_NAMES = {
    pj.PJSIP_INV_STATE_NULL: "NULL",
    pj.PJSIP_INV_STATE_CALLING: "CALLING",
    pj.PJSIP_INV_STATE_INCOMING: "INCOMING",
    pj.PJSIP_INV_STATE_EARLY: "EARLY",
    pj.PJSIP_INV_STATE_CONNECTING: "CONNECTING",
    pj.PJSIP_INV_STATE_CONFIRMED: "CONFIRMED",
    pj.PJSIP_INV_STATE_DISCONNECTED: "DISCONNECTED",
}

MEDIA_STATUS = {
    pj.PJSUA_CALL_MEDIA_NONE: "NONE",
    pj.PJSUA_CALL_MEDIA_ACTIVE: "ACTIVE",
    pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "LOCAL_HOLD",
    pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "REMOTE_HOLD",
    pj.PJSUA_CALL_MEDIA_ERROR: "ERROR",
}
_AUDIO_UP = (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_LOCAL_HOLD, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD)

Json = dict[str, Any]
MAX_ENDED = 1000  # summaries of finished calls kept for call_info
PASSWORD_ENV = "CALLPARK_PHONE_PASSWORD"


class CommandError(Exception):
    """A command that cannot be done; becomes ``{"ok": false, "error": ...}``."""


class _Deferred:
    """Returned by a command handler that replies later."""


DEFERRED = _Deferred()


def pj_error_text(exc: BaseException) -> str:
    if isinstance(exc, pj.Error):
        return f"{exc.title}: {exc.reason} (status {exc.status})"
    return f"{type(exc).__name__}: {exc}"


def x_headers(raw: str | None) -> dict[str, str]:
    """``X-*`` headers of a raw message (first value of each)."""
    if not raw:
        return {}
    try:
        msg = parse_message(raw)
    except SipParseError:
        return {}
    out: dict[str, str] = {}
    for name, value in msg.headers:
        if name.lower().startswith("x-") and name not in out:
            out[name] = value
    return out


class PhoneCall(TrackedCall):
    """One call of the phone; reports its life as events."""

    def __init__(self, app: PhoneApp, acc: Any, call_id: int = pj.PJSUA_INVALID_ID, *, role: str) -> None:
        super().__init__(acc, call_id)
        self.app = app
        self.handle = app.new_handle()
        self.role = role
        self.state = "NULL"
        self.code = 0
        self.reason = ""
        self.media_active = False
        self.hangup_when_transferred = False
        self.origin: Json = {}

    # pjsua2 callbacks: every one is guarded (exceptions would be printed and lost)

    def onCallState(self, prm: Any) -> None:
        super().onCallState(prm)
        self.app.guard("onCallState", self._on_state)

    def _on_state(self) -> None:
        ci = self.getInfo()
        self.state = STATE_NAMES.get(ci.state, str(ci.state))
        self.code = int(ci.lastStatusCode)
        self.reason = str(ci.lastReason)
        event: Json = {
            "event": "call_state",
            "call": self.handle,
            "state": self.state,
            "code": self.code,
            "reason": self.reason,
            "role": self.role,
            "remote_uri": str(ci.remoteUri),
            "call_id": str(ci.callIdString),
        }
        if self.state == "CONFIRMED":
            event["remote_contact"] = str(ci.remoteContact)
            if self.role == "caller":
                event["x_headers"] = x_headers(self.received_answer)
        self.app.emit(event)
        if self.state == "DISCONNECTED":
            self.app.call_ended(self)

    def onCallMediaState(self, prm: Any) -> None:
        self.app.guard("onCallMediaState", self._on_media)

    def _on_media(self) -> None:
        ci = self.getInfo()
        active = False
        status = "NONE"
        direction = 0
        for mi in ci.media:
            if mi.type == pj.PJMEDIA_TYPE_AUDIO:
                status = MEDIA_STATUS.get(mi.status, str(mi.status))
                direction = int(mi.dir)
                # A held (sendonly/recvonly) stream still has a conference port: audio flows one way.
                active = mi.status in _AUDIO_UP and int(mi.audioConfSlot) >= 0
                break
        self.media_active = active
        self.app.emit(
            {"event": "media_state", "call": self.handle, "active": active, "status": status, "dir": direction}
        )
        if active:
            self.app.reconnect_media(self)

    def onCallTransferRequest(self, prm: Any) -> None:
        self.app.guard("onCallTransferRequest", self._on_xfer_request, prm)

    def _on_xfer_request(self, prm: Any) -> None:
        if not self.app.accept_transfers:
            prm.statusCode = 603
            self.app.emit(
                {"event": "transfer_request", "call": self.handle, "target": str(prm.dstUri), "accepted": False}
            )
            return
        new_call = self.app.adopt(PhoneCall(self.app, self.app.account, role="caller"))
        new_call.origin = {"transferred_from": self.handle}
        prm.newCall = new_call
        self.app.emit(
            {
                "event": "transfer_request",
                "call": self.handle,
                "target": str(prm.dstUri),
                "new_call": new_call.handle,
                "accepted": True,
            }
        )

    def onCallTransferStatus(self, prm: Any) -> None:
        self.app.guard("onCallTransferStatus", self._on_xfer_status, prm)

    def _on_xfer_status(self, prm: Any) -> None:
        code = int(prm.statusCode)
        final = bool(prm.finalNotify)
        self.app.emit(
            {"event": "transfer_status", "call": self.handle, "code": code, "reason": str(prm.reason), "final": final}
        )
        if final and 200 <= code < 300 and self.hangup_when_transferred:
            self.hangup_when_transferred = False
            self.app.defer(partial(self.app.hangup_quietly, self.handle))

    def onCallReplaceRequest(self, prm: Any) -> None:
        self.app.guard("onCallReplaceRequest", self._on_replace_request, prm)

    def _on_replace_request(self, prm: Any) -> None:
        new_call = self.app.adopt(PhoneCall(self.app, self.app.account, role="callee"))
        new_call.origin = {"replaces": self.handle}
        new_call.observe_incoming(str(prm.rdata.wholeMsg))
        prm.newCall = new_call
        self.app.emit(
            {
                "event": "replace_request",
                "call": self.handle,
                "new_call": new_call.handle,
                "from": new_call.dialog.remote_referred_by,
            }
        )

    def onCallReplaced(self, prm: Any) -> None:
        self.app.guard("onCallReplaced", self._on_replaced, prm)

    def _on_replaced(self, prm: Any) -> None:
        new_call = self.app.find_by_pjsua_id(int(prm.newCallId), exclude=self)
        if new_call is None:
            new_call = self.app.adopt(PhoneCall(self.app, self.app.account, int(prm.newCallId), role="callee"))
            new_call.origin = {"replaces": self.handle}
            prm.newCall = new_call
        self.app.emit({"event": "replaced", "call": self.handle, "new_call": new_call.handle})

    def onCallRedirected(self, prm: Any) -> int:
        accept = self.app.accept_redirects
        # targetUri is printed in From/To context (port dropped); the 3xx has the real Contact.
        contact: str | None = None
        found = event_message(prm.e)
        if found is not None:
            with contextlib.suppress(SipParseError):
                contact = parse_message(found[0]).header("Contact")
        self.app.emit(
            {
                "event": "redirected",
                "call": self.handle,
                "target": str(prm.targetUri),
                "contact": contact,
                "accepted": accept,
            }
        )
        return int(pj.PJSIP_REDIRECT_ACCEPT if accept else pj.PJSIP_REDIRECT_STOP)

    def onInstantMessage(self, prm: Any) -> None:
        self.app.guard("onInstantMessage", self.app.message_received, prm, self.handle)

    def onDtmfDigit(self, prm: Any) -> None:
        self.app.emit({"event": "dtmf", "call": self.handle, "digit": str(prm.digit)})

    def summary(self) -> Json:
        out: Json = {
            "call": self.handle,
            "role": self.role,
            "state": self.state,
            "code": self.code,
            "reason": self.reason,
            "media_active": self.media_active,
            **self.origin,
        }
        try:
            ci = self.getInfo()
            out.update(
                remote_uri=str(ci.remoteUri),
                remote_contact=str(ci.remoteContact),
                local_uri=str(ci.localUri),
                call_id=str(ci.callIdString),
                state=STATE_NAMES.get(ci.state, self.state),
            )
        except pj.Error:
            pass
        out.update(
            local_tag=self.dialog.local_tag,
            remote_tag=self.dialog.remote_tag,
            remote_supports_replaces=self.dialog.remote_supports_replaces,
            referred_by=self.dialog.remote_referred_by,
        )
        out.setdefault("call_id", self.dialog.call_id)
        return out


class PhoneAccount(pj.Account):  # type: ignore[misc]
    def __init__(self, app: PhoneApp) -> None:
        super().__init__()
        self.app = app

    def onIncomingCall(self, prm: Any) -> None:
        self.app.guard("onIncomingCall", self.app.incoming_call, prm)

    def onRegState(self, prm: Any) -> None:
        self.app.guard("onRegState", self._on_reg, prm)

    def _on_reg(self, prm: Any) -> None:
        active = bool(self.getInfo().regIsActive)
        self.app.emit(
            {
                "event": "reg_state",
                "code": int(prm.code),
                "reason": str(prm.reason),
                "expiration": int(prm.expiration),
                "active": active,
            }
        )

    def onInstantMessage(self, prm: Any) -> None:
        self.app.guard("onInstantMessage", self.app.message_received, prm, None)

    def onInstantMessageStatus(self, prm: Any) -> None:
        self.app.emit(
            {"event": "message_status", "to": str(prm.toUri), "code": int(prm.code), "reason": str(prm.reason)}
        )


class PhoneBuddy(pj.Buddy):  # type: ignore[misc]
    """A peer we send out-of-dialog MESSAGEs to (no presence subscription)."""


class PhoneApp:
    """State and command handlers of the phone process (main thread only)."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self._out_lock = threading.Lock()
        tuning = MediaTuning() if args.tuning == "tuned" else MediaTuning.defaults()
        self.endpoint = SipEndpoint(
            EndpointConfig(
                sip_port=args.sip_port,
                host=args.host,
                tuning=tuning,
                pj_log_level=args.pj_log_level or None,
                logger_name="callpark.lab.phone.pjsip",
                user_agent=f"callpark-phone/{args.user}",
            )
        )
        self.settings = AccountSettings(
            user=args.user,
            sip_port=args.sip_port,
            rtp_port=args.rtp_port,
            host=args.host,
            rtp_range=args.rtp_range,
            registrar=args.registrar,
            proxy=args.proxy,
            domain=args.domain,
            register_on_add=False,
            display_name=args.display_name,
            auth_user=args.auth_user,
            # from the environment, never argv (ps shows argv); never logged
            password=os.environ.get(PASSWORD_ENV) if args.auth_user else None,
        )
        self.work_dir = (
            Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix=f"callpark-phone-{args.user}-"))
        )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.account: Any = None
        self.calls: dict[str, PhoneCall] = {}
        self.ended: dict[str, Json] = {}
        self.players: dict[str, Any] = {}
        self.player_paths: dict[str, str] = {}
        self.recorders: dict[str, tuple[Any, str, Any, float]] = {}
        self.buddies: dict[str, Any] = {}
        self.messages: list[Json] = []
        self.commands: queue.Queue[str | None] = queue.Queue()
        self._deferred: list[Callable[[], None]] = []
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count(1)
        self._handles = itertools.count(1)
        self.stopping = False
        self.auto_answer: int | None = args.auto_answer_code if args.auto_answer else None
        self.auto_answer_headers: dict[str, str] = {}
        self.accept_redirects = True
        self.accept_transfers = True
        self.callback_errors = 0

    # ----------------------------------------------------------------- plumbing

    def emit(self, obj: Json) -> None:
        if "event" in obj:
            obj["ts"] = round(time.time(), 6)
        line = json.dumps(obj, separators=(",", ":"), default=str)
        with self._out_lock:
            try:
                self.out.write(line + "\n")
                self.out.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.stopping = True

    def guard(self, where: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self.callback_errors += 1
            log.exception("callback %s failed", where)
            self.emit({"event": "callback_error", "where": where, "error": pj_error_text(exc)})

    def defer(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the main thread after the current pump (outside pjsua callbacks)."""
        self._deferred.append(fn)

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._seq), fn))

    def new_handle(self) -> str:
        return f"c{next(self._handles)}"

    def adopt(self, call: PhoneCall) -> PhoneCall:
        self.calls[call.handle] = call
        return call

    def find_by_pjsua_id(self, call_id: int, *, exclude: PhoneCall | None = None) -> PhoneCall | None:
        for call in self.calls.values():
            if call is not exclude and call.getId() == call_id:
                return call
        return None

    def call_ended(self, call: PhoneCall) -> None:
        """Forget a DISCONNECTED call (its C++ object goes when the callback returns)."""
        self.ended[call.handle] = call.summary()
        while len(self.ended) > MAX_ENDED:
            del self.ended[next(iter(self.ended))]
        self._stop_media(call.handle)
        self.calls.pop(call.handle, None)

    def _call(self, args: Json, key: str = "call") -> PhoneCall:
        handle = args.get(key)
        if not isinstance(handle, str):
            raise CommandError(f"missing '{key}'")
        call = self.calls.get(handle)
        if call is None:
            state = self.ended.get(handle, {}).get("state")
            raise CommandError(f"no live call {handle}" + (f" (it is {state})" if state else ""))
        return call

    def hangup_quietly(self, handle: str) -> None:
        call = self.calls.get(handle)
        if call is None:
            return
        try:
            call.hangup(op_param())
        except pj.Error as exc:
            log.debug("hangup %s: %s", handle, pj_error_text(exc))

    # ----------------------------------------------------------------- callbacks

    def incoming_call(self, prm: Any) -> None:
        call = self.adopt(PhoneCall(self, self.account, int(prm.callId), role="callee"))
        raw = str(prm.rdata.wholeMsg)
        call.observe_incoming(raw)
        ci = call.getInfo()
        self.emit(
            {
                "event": "incoming",
                "call": call.handle,
                "from": str(ci.remoteUri),
                "to": str(ci.localUri),
                "call_id": str(ci.callIdString),
                "remote_contact": str(ci.remoteContact),
                "referred_by": call.dialog.remote_referred_by,
                "supports_replaces": call.dialog.remote_supports_replaces,
                "x_headers": x_headers(raw),
            }
        )
        if self.auto_answer is not None:
            code = self.auto_answer
            headers = dict(self.auto_answer_headers)
            self.defer(partial(self._auto_answer, call.handle, code, headers))

    def _auto_answer(self, handle: str, code: int, headers: dict[str, str]) -> None:
        call = self.calls.get(handle)
        if call is not None:
            try:
                call.answer(op_param(code, headers=headers))
            except pj.Error as exc:
                self.emit({"event": "callback_error", "where": "auto_answer", "error": pj_error_text(exc)})

    def message_received(self, prm: Any, handle: str | None) -> None:
        msg: Json = {
            "from": str(prm.fromUri),
            "to": str(prm.toUri),
            "contact": str(prm.contactUri),
            "content_type": str(prm.contentType),
            "body": str(prm.msgBody),
            "x_headers": x_headers(str(prm.rdata.wholeMsg)),
        }
        if handle is not None:
            msg["call"] = handle
        self.messages.append(msg)
        self.emit({"event": "message", **msg})

    def reconnect_media(self, call: PhoneCall) -> None:
        """Re-attach player/recorder after a media update (re-INVITE, replace)."""
        am = call.getAudioMedia(-1)
        player = self.players.get(call.handle)
        if player is not None:
            player.startTransmit(am)
        rec = self.recorders.get(call.handle)
        if rec is not None:
            am.startTransmit(rec[0])

    def _stop_media(self, handle: str) -> None:
        self.players.pop(handle, None)
        self.player_paths.pop(handle, None)
        if handle in self.recorders:
            self._finish_recording(handle, early=True)

    # ----------------------------------------------------------------- main loop

    def run(self) -> int:
        self.endpoint.start()
        try:
            acc = PhoneAccount(self)
            acc.create(account_config(self.settings))
            self.account = acc
            reader = threading.Thread(target=self._read_stdin, name="stdin", daemon=True)
            reader.start()
            self.emit(
                {
                    "event": "ready",
                    "user": self.args.user,
                    "uri": self.uri(),
                    "sip_port": self.args.sip_port,
                    "rtp_port": self.args.rtp_port,
                    "pid": os.getpid(),
                    "work_dir": str(self.work_dir),
                }
            )
            if self.args.register:
                acc.setRegistration(True)
            while not self.stopping:
                self.endpoint.pump(self._pump_timeout_ms())
                self._run_deferred()
                self._run_commands()
                self._run_timers()
        finally:
            self._shutdown()
        return 0

    def uri(self) -> str:
        return f"sip:{self.args.user}@{self.args.host}:{self.args.sip_port}"

    def request_stop(self, *_: Any) -> None:
        self.stopping = True
        self.endpoint.wake()

    def _read_stdin(self) -> None:
        try:
            for line in sys.stdin:
                self.commands.put(line)
                self.endpoint.wake()
        except (OSError, ValueError):
            pass
        self.commands.put(None)
        self.endpoint.wake()

    def _pump_timeout_ms(self) -> int:
        if self._deferred or not self.commands.empty():
            return 0
        timeout = 100.0
        if self._timers:
            timeout = min(timeout, max(0.0, (self._timers[0][0] - time.monotonic()) * 1000.0))
        return int(timeout)

    def _run_deferred(self) -> None:
        while self._deferred:
            fn = self._deferred.pop(0)
            self.guard("deferred", fn)

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            self.guard("timer", fn)

    def _run_commands(self) -> None:
        while not self.stopping:
            try:
                line = self.commands.get_nowait()
            except queue.Empty:
                return
            if line is None:
                log.info("stdin closed; stopping")
                self.stopping = True
                return
            if line.strip():
                self._handle_line(line)
            self._run_deferred()

    def _handle_line(self, line: str) -> None:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            self.emit({"id": None, "ok": False, "error": f"bad JSON: {exc}"})
            return
        if not isinstance(obj, dict):
            self.emit({"id": None, "ok": False, "error": "a command must be a JSON object"})
            return
        cid = obj.get("id")
        name = obj.get("cmd")
        handler = getattr(self, f"cmd_{name}", None) if isinstance(name, str) else None
        if handler is None:
            self.emit({"id": cid, "ok": False, "error": f"unknown command {name!r}"})
            return
        try:
            result = handler(obj, cid)
        except (CommandError, pj.Error, KeyError, ValueError, TypeError, OSError) as exc:
            self.emit({"id": cid, "ok": False, "error": pj_error_text(exc) if isinstance(exc, pj.Error) else str(exc)})
            return
        if result is DEFERRED:
            return
        reply: Json = {"id": cid, "ok": True}
        if isinstance(result, dict):
            reply.update(result)
        self.emit(reply)

    def _shutdown(self) -> None:
        self.emit({"event": "stopping"})
        for handle in list(self.recorders):
            self._finish_recording(handle, early=True)
        self.players.clear()
        self.buddies.clear()
        self._deferred.clear()
        self._timers.clear()
        accounts = [self.account] if self.account is not None else []
        self.endpoint.shutdown(calls=self.calls, accounts=accounts)
        self.account = None
        self.emit({"event": "stopped", "callback_errors": self.callback_errors})

    # ----------------------------------------------------------------- commands
    # Each handler takes (args, command id) and returns a dict of reply fields,
    # None (plain ok), or DEFERRED (it replies later with the same id).

    def cmd_ping(self, args: Json, cid: Any) -> Json:
        return {"pong": True}

    def cmd_status(self, args: Json, cid: Any) -> Json:
        info: Json = {
            "user": self.args.user,
            "uri": self.uri(),
            "sip_port": self.args.sip_port,
            "rtp_port": self.args.rtp_port,
            "calls": len(self.calls),
            "callback_errors": self.callback_errors,
            "auto_answer": self.auto_answer,
        }
        if self.account is not None:
            ai = self.account.getInfo()
            info.update(reg_active=bool(ai.regIsActive), reg_status=int(ai.regStatus))
        return info

    def cmd_quit(self, args: Json, cid: Any) -> None:
        self.stopping = True

    def cmd_register(self, args: Json, cid: Any) -> None:
        if not self.settings.registrar:
            raise CommandError("no registrar configured")
        self.account.setRegistration(True)

    def cmd_unregister(self, args: Json, cid: Any) -> None:
        if not self.settings.registrar:
            raise CommandError("no registrar configured")
        self.account.setRegistration(False)

    def cmd_call(self, args: Json, cid: Any) -> Json:
        uri = args.get("uri")
        if not isinstance(uri, str) or not uri:
            raise CommandError("missing 'uri'")
        call = self.adopt(PhoneCall(self, self.account, role="caller"))
        try:
            call.makeCall(uri, op_param(headers=args.get("headers") or {}))
        except pj.Error:
            self.calls.pop(call.handle, None)
            raise
        return {"call": call.handle}

    def cmd_answer(self, args: Json, cid: Any) -> None:
        call = self._call(args)
        call.answer(
            op_param(
                int(args.get("code", 200)),
                headers=args.get("headers") or {},
                sendonly=bool(args.get("sendonly", False)),
            )
        )

    def cmd_reject(self, args: Json, cid: Any) -> None:
        call = self._call(args)
        call.hangup(op_param(int(args.get("code", 486)), headers=args.get("headers") or {}, reason=args.get("reason")))

    def cmd_redirect(self, args: Json, cid: Any) -> None:
        call = self._call(args)
        contact = args.get("contact")
        if not isinstance(contact, str) or not contact:
            raise CommandError("missing 'contact'")
        if "<" not in contact:
            contact = f"<{contact}>"
        headers = dict(args.get("headers") or {})
        headers["Contact"] = contact
        call.answer(op_param(int(args.get("code", 302)), headers=headers))

    def cmd_hangup(self, args: Json, cid: Any) -> None:
        call = self._call(args)
        call.hangup(op_param(int(args["code"]) if "code" in args else None, headers=args.get("headers") or {}))

    def cmd_hangup_all(self, args: Json, cid: Any) -> None:
        self.endpoint.ep.hangupAllCalls()

    def cmd_blind_transfer(self, args: Json, cid: Any) -> None:
        call = self._call(args)
        target = args.get("target")
        if not isinstance(target, str) or not target:
            raise CommandError("missing 'target'")
        call.hangup_when_transferred = bool(args.get("hangup", True))
        call.xfer(target, op_param(headers=args.get("headers") or {}))

    def cmd_attended_transfer(self, args: Json, cid: Any) -> Json:
        call_a = self._call(args, "call")
        call_b = self._call(args, "replaces_call")
        tags = call_b.tags
        contact = call_b.remote_contact()
        if tags is None:
            raise CommandError(f"dialog tags of {call_b.handle} unknown: {call_b.dialog}")
        if not contact:
            raise CommandError(f"remote contact of {call_b.handle} unknown")
        refer_to = refer_to_with_replaces(contact, tags.replaces_for_peer())
        call_a.hangup_when_transferred = bool(args.get("hangup", True))
        call_a.xfer(refer_to, op_param(headers=args.get("headers") or {}))
        return {"refer_to": refer_to}

    def cmd_calls(self, args: Json, cid: Any) -> Json:
        out: Json = {"calls": [c.summary() for c in self.calls.values()]}
        if args.get("ended"):
            out["ended"] = list(self.ended.values())
        return out

    def cmd_call_info(self, args: Json, cid: Any) -> Json:
        handle = args.get("call")
        if isinstance(handle, str) and handle in self.ended and handle not in self.calls:
            return {"info": self.ended[handle]}
        return {"info": self._call(args).summary()}

    def cmd_received_message(self, args: Json, cid: Any) -> Json:
        call = self._call(args)
        which = str(args.get("which", "answer"))
        raw = {"answer": call.received_answer, "invite": call.received_invite, "last": call.last_received}.get(which)
        return {"message": raw}

    def cmd_received_header(self, args: Json, cid: Any) -> Json:
        call = self._call(args)
        return {"value": call.received_header(str(args["name"]), str(args.get("which", "answer")))}

    def cmd_messages(self, args: Json, cid: Any) -> Json:
        return {"messages": list(self.messages)}

    def cmd_send_message(self, args: Json, cid: Any) -> None:
        body = str(args.get("body", ""))
        prm = pj.SendInstantMessageParam()
        prm.content = body
        prm.contentType = str(args.get("content_type", "text/plain"))
        if args.get("call"):
            self._call(args).sendInstantMessage(prm)
            return
        to = args.get("to")
        if not isinstance(to, str) or not to:
            raise CommandError("missing 'to' (or 'call')")
        buddy = self.buddies.get(to)
        if buddy is None:
            cfg = pj.BuddyConfig()
            cfg.uri = to
            cfg.subscribe = False
            buddy = PhoneBuddy()
            buddy.create(self.account, cfg)
            self.buddies[to] = buddy
        buddy.sendInstantMessage(prm)

    def cmd_play_tone(self, args: Json, cid: Any) -> Json:
        freq = float(args["freq"])
        level = float(args.get("level", 0.5))
        path = self.work_dir / f"tone-{freq:g}Hz-{level:g}.wav"
        if not path.exists():
            audio.write_tone(path, freq, 1.0, rate=8000, level=level)
        self._play(args, str(path))
        return {"path": str(path)}

    def cmd_play_file(self, args: Json, cid: Any) -> Json:
        path = str(args["path"])
        if not Path(path).is_file():
            raise CommandError(f"no such file: {path}")
        self._play(args, path)
        return {"path": path}

    def _play(self, args: Json, path: str) -> None:
        call = self._call(args)
        am = call.getAudioMedia(-1)
        self.players.pop(call.handle, None)
        player = pj.AudioMediaPlayer()
        player.createPlayer(path, 0 if args.get("loop", True) else pj.PJMEDIA_FILE_NO_LOOP)
        player.startTransmit(am)
        self.players[call.handle] = player
        self.player_paths[call.handle] = path

    def cmd_stop_play(self, args: Json, cid: Any) -> None:
        call = self._call(args)
        self.players.pop(call.handle, None)
        self.player_paths.pop(call.handle, None)

    def cmd_record(self, args: Json, cid: Any) -> _Deferred:
        call = self._call(args)
        if call.handle in self.recorders:
            raise CommandError(f"{call.handle} is already being recorded")
        seconds = float(args.get("seconds", 1.0))
        if not 0 < seconds <= 600:
            raise CommandError("seconds must be within (0, 600]")
        path = str(args.get("path") or self.work_dir / f"rec-{call.handle}-{next(self._seq)}.wav")
        am = call.getAudioMedia(-1)
        rec = pj.AudioMediaRecorder()
        rec.createRecorder(path)
        am.startTransmit(rec)
        self.recorders[call.handle] = (rec, path, cid, time.monotonic())
        self.call_later(seconds, partial(self._finish_recording, call.handle))
        return DEFERRED

    def _finish_recording(self, handle: str, early: bool = False) -> None:
        entry = self.recorders.pop(handle, None)
        if entry is None:
            return
        path, cid, started = entry[1], entry[2], entry[3]
        del entry  # the last reference: destroying the recorder writes the WAV header
        self.emit(
            {
                "id": cid,
                "ok": True,
                "path": path,
                "seconds": round(time.monotonic() - started, 3),
                "complete": not early,
            }
        )

    def cmd_dtmf(self, args: Json, cid: Any) -> None:
        self._call(args).dialDtmf(str(args["digits"]))

    def cmd_set_auto_answer(self, args: Json, cid: Any) -> None:
        code = args.get("code", 200)
        self.auto_answer = None if code is None else int(code)
        self.auto_answer_headers = {str(k): str(v) for k, v in (args.get("headers") or {}).items()}

    def cmd_set_accept_redirects(self, args: Json, cid: Any) -> None:
        self.accept_redirects = bool(args.get("accept", True))

    def cmd_set_accept_transfers(self, args: Json, cid: Any) -> None:
        self.accept_transfers = bool(args.get("accept", True))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m callpark.lab.phone",
        description=protocol.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--user", required=True)
    p.add_argument("--sip-port", type=int, required=True)
    p.add_argument("--rtp-port", type=int, required=True)
    p.add_argument("--rtp-range", type=int, default=12, help="RTP ports from --rtp-port (pairs)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--registrar", help="host:port of the registrar")
    p.add_argument("--proxy", help="host:port of the outbound proxy")
    p.add_argument("--domain", help="domain of our AOR (default: the registrar host, else host:sip-port)")
    p.add_argument("--display-name")
    p.add_argument("--auth-user", help=f"digest user name; the password comes from ${PASSWORD_ENV}")
    p.add_argument("--register", action="store_true", help="register at start (needs --registrar)")
    p.add_argument("--auto-answer", action="store_true")
    p.add_argument("--auto-answer-code", type=int, default=200)
    p.add_argument("--work-dir", help="where tones and recordings go (default: a temp dir)")
    p.add_argument("--tuning", choices=("tuned", "default"), default="tuned")
    p.add_argument("--pj-log-level", type=int, default=0, help="route pjlib logs at this level (0: none)")
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The protocol gets a private copy of stdout; fd 1 goes to stderr so that nothing
    # printed by native code can corrupt the JSON stream.
    proto_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    out = os.fdopen(proto_fd, "w", buffering=1, encoding="utf-8")
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    app = PhoneApp(args, out)

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        app.request_stop()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        code = app.run()
    finally:
        with contextlib.suppress(OSError):
            out.flush()
    return code
