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
import itertools
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import pjsua2 as pj

from callpark.lab.phone import protocol
from callpark.lab.phone.calls import Json, PhoneAccount, PhoneCall, pj_error_text, x_headers
from callpark.lab.phone.commands import DEFERRED, CommandError, PhoneCommands
from callpark.lab.phone.media import PhoneMedia
from callpark.sip.endpoint import (
    AccountSettings,
    EndpointConfig,
    MediaTuning,
    SipEndpoint,
    account_config,
    op_param,
)
from callpark.sip.pump import Pump

log = logging.getLogger("callpark.lab.phone")

MAX_ENDED = 1000  # summaries of finished calls kept for call_info
PASSWORD_ENV = "CALLPARK_PHONE_PASSWORD"
PUMP_MS = 100


class PhoneApp:
    """State, callbacks and main loop of the phone process (main thread only).

    ``media`` plays and records, ``commands`` handles the stdin commands; the pump
    (:class:`callpark.sip.pump.Pump`) runs pjsua2, stdin lines, deferred actions and timers.
    """

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
                tls_ca=args.tls_ca,
            )
        )
        self.pump: Pump[str] = Pump(self.endpoint, max_wait_ms=PUMP_MS)
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
            transport="tls" if args.tls_ca else "udp",
        )
        self.work_dir = (
            Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix=f"callpark-phone-{args.user}-"))
        )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.account: Any = None
        self.calls: dict[str, PhoneCall] = {}
        self.ended: dict[str, Json] = {}
        self.media = PhoneMedia(self.emit, self.call_later)
        self.commands = PhoneCommands(self)
        self.buddies: dict[str, Any] = {}
        self.messages: list[Json] = []
        self._handles = itertools.count(1)
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
                self.pump.stop()

    def guard(self, where: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self.callback_errors += 1
            log.exception("callback %s failed", where)
            self.emit({"event": "callback_error", "where": where, "error": pj_error_text(exc)})

    def defer(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the main thread after the current pump (outside pjsua callbacks)."""
        self.pump.defer(partial(self.guard, "deferred", fn))

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> None:
        self.pump.call_later(delay_s, partial(self.guard, "timer", fn))

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
        self.media.stop(call.handle)
        self.calls.pop(call.handle, None)

    def find_call(self, args: Json, key: str = "call") -> PhoneCall:
        """The live call named by ``args[key]``, or a :class:`CommandError` saying why not."""
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

    def incoming_call(self, acc: PhoneAccount, prm: Any) -> None:
        call = self.adopt(PhoneCall(self, acc, int(prm.callId), role="callee"))
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

    # ----------------------------------------------------------------- main loop

    def run(self) -> int:
        self.endpoint.start()
        try:
            acc = PhoneAccount(self)
            acc.create(account_config(self.settings))
            self.account = acc
            self.pump.start_reader(_stdin_lines(), "stdin")
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
            self.pump.run(self._tick)
        finally:
            self._shutdown()
        return 0

    def uri(self) -> str:
        return f"sip:{self.args.user}@{self.args.host}:{self.args.sip_port}"

    def request_stop(self, *_: Any) -> None:
        self.pump.interrupt()

    def _tick(self) -> None:
        self.pump.run_deferred()
        self._run_commands()
        self.pump.run_due_timers()

    def _run_commands(self) -> None:
        if not self.pump.running:
            return
        for line in self.pump.messages():
            if line is None:
                log.info("stdin closed; stopping")
                self.pump.stop()
                return
            if line.strip():
                self._handle_line(line)
            self.pump.run_deferred()
            if not self.pump.running:
                return

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
        handler = getattr(self.commands, f"cmd_{name}", None) if isinstance(name, str) else None
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
        self.media.close()
        self.buddies.clear()
        self.pump.clear()
        accounts = [self.account] if self.account is not None else []
        self.endpoint.shutdown(calls=self.calls, accounts=accounts)
        self.account = None
        self.emit({"event": "stopped", "callback_errors": self.callback_errors})


def _stdin_lines() -> Iterator[str]:
    """The command lines on stdin, until it closes or fails."""
    with contextlib.suppress(OSError, ValueError):
        yield from sys.stdin


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
    p.add_argument("--tls-ca", help="reach the registrar and proxy over SIP/TLS, trusting only this CA (PEM)")
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
