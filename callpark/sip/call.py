"""A pjsua2 ``Call`` that learns its dialog (Call-ID, tags, remote Contact) from raw SIP.

``CallInfo`` has no tags, and From/To URIs lose their port, so :class:`TrackedCall`
reads them from the messages pjsua2 shows us:

- incoming call: call :meth:`TrackedCall.observe_incoming` with
  ``OnIncomingCallParam.rdata.wholeMsg`` (remote tag = From tag of the INVITE);
- every transaction event (``onCallTsxState``) and state event (``onCallState``) is fed
  to :class:`callpark.sip.message.DialogTracker`: the 2xx we send carries our local tag
  in To, our INVITE carries our local tag in From, the 2xx we receive the remote tag.

Subclasses that override ``onCallTsxState`` / ``onCallState`` must call ``super()``.
"""

from __future__ import annotations

import logging
from typing import Any

import pjsua2 as pj

from callpark.sip.message import DialogTags, DialogTracker, SipMessage, SipParseError, parse_message

log = logging.getLogger(__name__)

AUDIO_UP = (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_LOCAL_HOLD, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD)
"""Media statuses whose stream has a conference port: audio flows (one way when held)."""


def event_message(event: Any) -> tuple[str, bool] | None:
    """Raw message carried by a ``pj.SipEvent`` and whether we sent it, or None.

    Handles TSX_STATE (with RX_MSG / TX_MSG source), RX_MSG and TX_MSG events.
    """
    try:
        etype = event.type
        if etype == pj.PJSIP_EVENT_TSX_STATE:
            tsx = event.body.tsxState
            if tsx.type == pj.PJSIP_EVENT_RX_MSG:
                raw = tsx.src.rdata.wholeMsg
                return (raw, False) if raw else None
            if tsx.type == pj.PJSIP_EVENT_TX_MSG:
                raw = tsx.src.tdata.wholeMsg
                return (raw, True) if raw else None
            return None
        if etype == pj.PJSIP_EVENT_RX_MSG:
            raw = event.body.rxMsg.rdata.wholeMsg
            return (raw, False) if raw else None
        if etype == pj.PJSIP_EVENT_TX_MSG:
            raw = event.body.txMsg.tdata.wholeMsg
            return (raw, True) if raw else None
    except (AttributeError, RuntimeError):
        return None
    return None


class TrackedCall(pj.Call):  # type: ignore[misc]
    """``pj.Call`` with dialog tracking and the last messages of interest kept as text.

    Attributes: ``dialog`` (:class:`DialogTracker`), ``received_invite`` (an incoming
    call's INVITE), ``sent_invite``, ``received_answer`` (the final 2xx we received for our
    INVITE), ``last_received`` (the last message received on this call).
    """

    def __init__(self, acc: Any, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(acc, call_id)
        self.dialog = DialogTracker()
        self.received_invite: str | None = None
        self.sent_invite: str | None = None
        self.received_answer: str | None = None
        self.last_received: str | None = None
        self.callback_errors = 0

    # -- feeding

    def observe_incoming(self, whole_msg: str) -> None:
        """Feed the initial INVITE of an incoming call (``prm.rdata.wholeMsg``)."""
        self.received_invite = whole_msg
        self._observe(whole_msg, sent=False)

    def observe_event(self, event: Any) -> SipMessage | None:
        """Feed a ``pj.SipEvent``; returns the parsed message if it carried one."""
        found = event_message(event)
        if found is None:
            return None
        raw, sent = found
        return self._observe(raw, sent=sent)

    def _observe(self, raw: str, *, sent: bool) -> SipMessage | None:
        try:
            msg = self.dialog.observe(raw, sent=sent)
        except SipParseError:
            return None
        if msg is None:
            return None
        if sent and msg.method == "INVITE" and self.sent_invite is None:
            self.sent_invite = raw
        if not sent:
            self.last_received = raw
            code = msg.status_code
            if code is not None and 200 <= code < 300 and msg.cseq_method == "INVITE":
                self.received_answer = raw
        self.on_sip_message(msg, raw, sent=sent)
        return msg

    def on_sip_message(self, msg: SipMessage, raw: str, *, sent: bool) -> None:
        """Hook: every SIP message seen on this call (after the dialog was updated)."""

    # -- pjsua2 callbacks

    def onCallTsxState(self, prm: Any) -> None:
        self._observe_guarded(prm, "onCallTsxState")

    def onCallState(self, prm: Any) -> None:
        self._observe_guarded(prm, "onCallState")

    def _observe_guarded(self, prm: Any, where: str) -> None:
        """Feed ``prm.e``; count and log what raises (pjsua2 would swallow it)."""
        try:
            self.observe_event(prm.e)
        except Exception:
            self.callback_errors += 1
            log.exception(where)

    # -- queries

    @property
    def tags(self) -> DialogTags | None:
        """Call-ID, local and remote tag, once known."""
        return self.dialog.tags

    def remote_contact(self) -> str | None:
        """The peer's Contact (keeps its port): from ``CallInfo``, else from messages."""
        try:
            contact = str(self.getInfo().remoteContact)
        except pj.Error:
            contact = ""
        return contact or self.dialog.remote_contact

    def received_message(self, which: str = "answer") -> str | None:
        """The ``answer``, ``invite`` or ``last`` received message (raw text), if any."""
        return {"answer": self.received_answer, "invite": self.received_invite, "last": self.last_received}.get(which)

    def received_header(self, name: str, which: str = "answer") -> str | None:
        """Header ``name`` of the ``answer``, ``invite`` or ``last`` received message."""
        raw = self.received_message(which)
        if not raw:
            return None
        try:
            return parse_message(raw).header(name)
        except SipParseError:
            return None
