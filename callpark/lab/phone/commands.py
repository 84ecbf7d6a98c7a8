"""The phone's command handlers: one ``cmd_<name>`` method per command of :mod:`callpark.lab.phone.protocol`.

Each handler takes (args, command id) and returns a dict of reply fields, None (plain ok),
or :data:`DEFERRED` (it replies later with the same id). A :class:`CommandError` (or a
``pj.Error``, ``KeyError``, ``ValueError``...) becomes ``{"ok": false, "error": ...}``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pjsua2 as pj

from callpark import audio
from callpark.lab.phone.calls import Json, PhoneBuddy, PhoneCall
from callpark.sip.endpoint import op_param
from callpark.sip.message import refer_to_with_replaces

if TYPE_CHECKING:
    from callpark.lab.phone.child import PhoneApp


class CommandError(Exception):
    """A command that cannot be done; becomes ``{"ok": false, "error": ...}``."""


class _Deferred:
    """Returned by a command handler that replies later."""


DEFERRED = _Deferred()


class PhoneCommands:
    """The command handlers of a :class:`~callpark.lab.phone.child.PhoneApp` (main thread only)."""

    def __init__(self, app: PhoneApp) -> None:
        self.app = app
        self._recordings = itertools.count(1)  # numbers the default recording file names

    def cmd_ping(self, args: Json, cid: Any) -> Json:
        return {"pong": True}

    def cmd_status(self, args: Json, cid: Any) -> Json:
        info: Json = {
            "user": self.app.args.user,
            "uri": self.app.uri(),
            "sip_port": self.app.args.sip_port,
            "rtp_port": self.app.args.rtp_port,
            "calls": len(self.app.calls),
            "callback_errors": self.app.callback_errors,
            "auto_answer": self.app.auto_answer,
        }
        if self.app.account is not None:
            ai = self.app.account.getInfo()
            info.update(reg_active=bool(ai.regIsActive), reg_status=int(ai.regStatus))
        return info

    def cmd_quit(self, args: Json, cid: Any) -> None:
        self.app.pump.stop()

    def cmd_register(self, args: Json, cid: Any) -> None:
        if not self.app.settings.registrar:
            raise CommandError("no registrar configured")
        self.app.account.setRegistration(True)

    def cmd_unregister(self, args: Json, cid: Any) -> None:
        if not self.app.settings.registrar:
            raise CommandError("no registrar configured")
        self.app.account.setRegistration(False)

    def cmd_call(self, args: Json, cid: Any) -> Json:
        uri = args.get("uri")
        if not isinstance(uri, str) or not uri:
            raise CommandError("missing 'uri'")
        call = self.app.adopt(PhoneCall(self.app, self.app.account, role="caller"))
        try:
            call.makeCall(uri, op_param(headers=args.get("headers") or {}))
        except pj.Error:
            self.app.calls.pop(call.handle, None)
            raise
        return {"call": call.handle}

    def cmd_answer(self, args: Json, cid: Any) -> None:
        call = self.app.find_call(args)
        call.answer(
            op_param(
                int(args.get("code", 200)),
                headers=args.get("headers") or {},
                sendonly=bool(args.get("sendonly", False)),
            )
        )

    def cmd_reject(self, args: Json, cid: Any) -> None:
        call = self.app.find_call(args)
        call.hangup(op_param(int(args.get("code", 486)), headers=args.get("headers") or {}, reason=args.get("reason")))

    def cmd_redirect(self, args: Json, cid: Any) -> None:
        call = self.app.find_call(args)
        contact = args.get("contact")
        if not isinstance(contact, str) or not contact:
            raise CommandError("missing 'contact'")
        if "<" not in contact:
            contact = f"<{contact}>"
        headers = dict(args.get("headers") or {})
        headers["Contact"] = contact
        call.answer(op_param(int(args.get("code", 302)), headers=headers))

    def cmd_hangup(self, args: Json, cid: Any) -> None:
        call = self.app.find_call(args)
        call.hangup(op_param(int(args["code"]) if "code" in args else None, headers=args.get("headers") or {}))

    def cmd_hangup_all(self, args: Json, cid: Any) -> None:
        self.app.endpoint.ep.hangupAllCalls()

    def cmd_blind_transfer(self, args: Json, cid: Any) -> None:
        call = self.app.find_call(args)
        target = args.get("target")
        if not isinstance(target, str) or not target:
            raise CommandError("missing 'target'")
        call.hangup_when_transferred = bool(args.get("hangup", True))
        call.xfer(target, op_param(headers=args.get("headers") or {}))

    def cmd_attended_transfer(self, args: Json, cid: Any) -> Json:
        call_a = self.app.find_call(args, "call")
        call_b = self.app.find_call(args, "replaces_call")
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
        out: Json = {"calls": [c.summary() for c in self.app.calls.values()]}
        if args.get("ended"):
            out["ended"] = list(self.app.ended.values())
        return out

    def cmd_call_info(self, args: Json, cid: Any) -> Json:
        handle = args.get("call")
        if isinstance(handle, str) and handle in self.app.ended and handle not in self.app.calls:
            return {"info": self.app.ended[handle]}
        return {"info": self.app.find_call(args).summary()}

    def cmd_received_message(self, args: Json, cid: Any) -> Json:
        call = self.app.find_call(args)
        return {"message": call.received_message(str(args.get("which", "answer")))}

    def cmd_received_header(self, args: Json, cid: Any) -> Json:
        call = self.app.find_call(args)
        return {"value": call.received_header(str(args["name"]), str(args.get("which", "answer")))}

    def cmd_messages(self, args: Json, cid: Any) -> Json:
        return {"messages": list(self.app.messages)}

    def cmd_send_message(self, args: Json, cid: Any) -> None:
        body = str(args.get("body", ""))
        prm = pj.SendInstantMessageParam()
        prm.content = body
        prm.contentType = str(args.get("content_type", "text/plain"))
        if args.get("call"):
            self.app.find_call(args).sendInstantMessage(prm)
            return
        to = args.get("to")
        if not isinstance(to, str) or not to:
            raise CommandError("missing 'to' (or 'call')")
        buddy = self.app.buddies.get(to)
        if buddy is None:
            cfg = pj.BuddyConfig()
            cfg.uri = to
            cfg.subscribe = False
            buddy = PhoneBuddy()
            buddy.create(self.app.account, cfg)
            self.app.buddies[to] = buddy
        buddy.sendInstantMessage(prm)

    def cmd_play_tone(self, args: Json, cid: Any) -> Json:
        freq = float(args["freq"])
        level = float(args.get("level", 0.5))
        path = self.app.work_dir / f"tone-{freq:g}Hz-{level:g}.wav"
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
        self.app.media.play(self.app.find_call(args), path, loop=bool(args.get("loop", True)))

    def cmd_stop_play(self, args: Json, cid: Any) -> None:
        self.app.media.stop_play(self.app.find_call(args).handle)

    def cmd_record(self, args: Json, cid: Any) -> _Deferred:
        call = self.app.find_call(args)
        if call.handle in self.app.media.recorders:
            raise CommandError(f"{call.handle} is already being recorded")
        seconds = float(args.get("seconds", 1.0))
        if not 0 < seconds <= 600:
            raise CommandError("seconds must be within (0, 600]")
        path = str(args.get("path") or self.app.work_dir / f"rec-{call.handle}-{next(self._recordings)}.wav")
        self.app.media.record(call, path, seconds, cid)
        return DEFERRED

    def cmd_dtmf(self, args: Json, cid: Any) -> None:
        self.app.find_call(args).dialDtmf(str(args["digits"]))

    def cmd_set_auto_answer(self, args: Json, cid: Any) -> None:
        code = args.get("code", 200)
        self.app.auto_answer = None if code is None else int(code)
        self.app.auto_answer_headers = {str(k): str(v) for k, v in (args.get("headers") or {}).items()}

    def cmd_set_accept_redirects(self, args: Json, cid: Any) -> None:
        self.app.accept_redirects = bool(args.get("accept", True))

    def cmd_set_accept_transfers(self, args: Json, cid: Any) -> None:
        self.app.accept_transfers = bool(args.get("accept", True))
