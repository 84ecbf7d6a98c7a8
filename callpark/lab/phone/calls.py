"""The phone's pjsua2 objects: its calls and account, which report their life as events.

Every pjsua2 callback is guarded (:meth:`PhoneApp.guard`): an exception would be printed and
lost otherwise. Events go out through :meth:`PhoneApp.emit` (see :mod:`callpark.lab.phone.protocol`).
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import TYPE_CHECKING, Any

import pjsua2 as pj

from callpark.sip.call import AUDIO_UP, TrackedCall, event_message
from callpark.sip.endpoint import GuardedAccount
from callpark.sip.message import SipParseError, parse_message

if TYPE_CHECKING:
    from callpark.lab.phone.child import PhoneApp

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

Json = dict[str, Any]


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
                active = mi.status in AUDIO_UP and int(mi.audioConfSlot) >= 0
                break
        self.media_active = active
        self.app.emit(
            {"event": "media_state", "call": self.handle, "active": active, "status": status, "dir": direction}
        )
        if active:
            self.app.media.reconnect(self)

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


class PhoneAccount(GuardedAccount):
    """The phone's account: incoming calls, registration and MESSAGEs become events."""

    def __init__(self, app: PhoneApp) -> None:
        super().__init__(app.guard, app.incoming_call)
        self.app = app

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
