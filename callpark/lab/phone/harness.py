"""Parent side of the softphone: start a phone process and drive it (no pjsua2 here).

    with Phone("alice", log_dir=tmp) as alice, Phone("bob", log_dir=tmp, auto_answer=True) as bob:
        call = alice.call(bob.uri)
        alice.wait_state(call, "CONFIRMED")

Events are kept in arrival order; :meth:`Phone.mark` returns a position to wait from
(``since=``) so that a wait only matches what happened after an action.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import sys
import threading
import wave
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from callpark.netutil import LOOPBACK, free_port, free_port_block
from callpark.procs import ManagedProcess
from callpark.waiting import WaitTimeout, wait_until

log = logging.getLogger(__name__)

Event = dict[str, Any]

_DEAD: Event = {"__dead__": True}
POLL_INTERVAL = 0.003  # first poll delay; wait_until backs off from there


class PhoneError(RuntimeError):
    """A phone command failed, or the phone process is gone."""


class Phone:
    """One softphone process (``python -m callpark.lab.phone``) and its event log.

    Ports default to fresh loopback ports. ``stop()`` (also on ``__exit__``) always
    leaves no process: a ``quit`` command, then SIGTERM/SIGKILL by PID if needed.
    ``auth_user``/``password``: digest credentials; the password reaches the child only
    through its environment (never argv, which ``ps`` and the process log show).
    """

    def __init__(
        self,
        user: str,
        *,
        log_dir: Path,
        sip_port: int | None = None,
        rtp_port: int | None = None,
        rtp_range: int = 12,
        host: str = LOOPBACK,
        registrar: str | None = None,
        proxy: str | None = None,
        domain: str | None = None,
        display_name: str | None = None,
        register: bool = False,
        auto_answer: bool = False,
        auto_answer_code: int = 200,
        tuning: str = "tuned",
        pj_log_level: int = 0,
        log_level: str = "WARNING",
        python: str = sys.executable,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        start_timeout: float = 15.0,
        command_timeout: float = 5.0,
        auth_user: str | None = None,
        password: str | None = None,
    ) -> None:
        self.user = user
        self.host = host
        self.sip_port = sip_port if sip_port is not None else free_port(udp_too=True)
        self.rtp_port = rtp_port if rtp_port is not None else free_port_block(rtp_range + 2)
        self.registrar = registrar
        self.log_dir = Path(log_dir)
        self.work_dir = self.log_dir / f"phone-{user}-{self.sip_port}"
        self.start_timeout = start_timeout
        self.command_timeout = command_timeout
        flags = {"--user": user, "--sip-port": self.sip_port, "--rtp-port": self.rtp_port, "--rtp-range": rtp_range}
        flags |= {"--host": host, "--work-dir": self.work_dir, "--tuning": tuning, "--pj-log-level": pj_log_level}
        flags["--log-level"] = log_level
        optional = {"--registrar": registrar, "--proxy": proxy, "--domain": domain, "--display-name": display_name}
        argv = [python, "-m", "callpark.lab.phone", *_flags(flags), *_flags(optional, skip_empty=True)]
        argv += ["--register"] if register else []
        argv += ["--auto-answer", "--auto-answer-code", str(auto_answer_code)] if auto_answer else []
        if auth_user:
            # digest credentials: the user on argv, the password only in the child's environment
            argv += ["--auth-user", auth_user]
            env = {**os.environ, **(env or {}), "CALLPARK_PHONE_PASSWORD": password or ""}
        self.process = ManagedProcess(
            f"phone-{user}",
            [*argv, *extra_args],
            log_path=self.log_dir / f"phone-{user}-{self.sip_port}.log",
            env=env,
            stdin_pipe=True,
            stdout_pipe=True,
        )
        self._register_at_start = register
        self._init_reader_state()
        self.exit_code: int | None = None
        self.killed = False

    def _init_reader_state(self) -> None:
        """What the reader thread fills and commands and waits read (``_lock`` guards it)."""
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._events: list[Event] = []
        self._replies: dict[int, Event] = {}
        self._noise: list[str] = []
        self._ids = itertools.count(1)
        self._reader: threading.Thread | None = None
        self._eof = False

    # ----------------------------------------------------------------- lifecycle

    @property
    def uri(self) -> str:
        """Direct SIP URI of this phone (``sip:user@127.0.0.1:port``)."""
        return f"sip:{self.user}@{self.host}:{self.sip_port}"

    @property
    def contact(self) -> str:
        return f"<{self.uri}>"

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> Phone:
        """Spawn the phone and wait for its ``ready`` event."""
        self.process.start()
        self._reader = threading.Thread(target=self._read, name=f"phone-{self.user}-reader", daemon=True)
        self._reader.start()
        try:
            self.wait_event(
                lambda e: e["event"] == "ready", timeout=self.start_timeout, what=f"phone {self.user} ready"
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> int | None:
        """Quit gracefully (exit code 0 expected); kill by PID if that fails. Idempotent."""
        proc = self.process
        if proc.returncode() is None and self._reader is None:
            return None  # never started
        if proc.is_running():
            with contextlib.suppress(PhoneError):
                self._send({"id": 0, "cmd": "quit"})
            try:
                wait_until(lambda: not proc.is_running(), timeout=timeout, what=f"phone {self.user} exit")
            except WaitTimeout:
                log.warning("phone %s did not quit in %.1fs; killing", self.user, timeout)
        exited = not proc.is_running()
        if exited and self._reader is not None:
            self._reader.join(timeout=2.0)
        code = proc.stop(timeout=2.0)
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        if self.exit_code is None:
            self.exit_code = code
        return self.exit_code

    def kill9(self) -> None:
        """SIGKILL the phone (for failure tests); ``killed`` tells fixtures not to expect exit 0."""
        self.killed = True
        self.process.kill9()
        self.exit_code = self.process.returncode()
        self.process.stop()

    def __enter__(self) -> Phone:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        return self.process.log_tail(lines)

    # ----------------------------------------------------------------- I/O

    def _read(self) -> None:
        stream = self.process.popen.stdout
        assert stream is not None
        try:
            for raw in stream:
                text = raw.decode("utf-8", "replace").strip()
                if not text:
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError:
                    with self._lock:
                        self._noise.append(text)
                    continue
                if not isinstance(obj, dict):
                    continue
                with self._lock:
                    if "event" in obj:
                        self._events.append(obj)
                    elif isinstance(obj.get("id"), int):
                        self._replies[obj["id"]] = obj
                    else:
                        self._noise.append(text)
        except (OSError, ValueError):
            pass
        finally:
            self._eof = True

    def _send(self, obj: Event) -> None:
        stdin = self.process.popen.stdin
        if stdin is None or stdin.closed:
            raise PhoneError(f"phone {self.user} has no stdin")
        data = (json.dumps(obj) + "\n").encode()
        with self._write_lock:
            try:
                stdin.write(data)
                stdin.flush()
            except (BrokenPipeError, OSError, ValueError) as exc:
                raise PhoneError(f"phone {self.user} is gone: {exc}\n{self.log_tail()}") from exc

    def _alive(self) -> bool:
        return self.process.is_running() and not self._eof

    def command(self, cmd: str, *, timeout: float | None = None, **args: Any) -> Event:
        """Send ``cmd`` and return its reply; raise :class:`PhoneError` when ok is false."""
        cid = next(self._ids)
        self._send({"id": cid, "cmd": cmd, **args})

        def reply() -> Event | None:
            with self._lock:
                found = self._replies.pop(cid, None)
            if found is not None:
                return found
            return None if self._alive() else _DEAD

        result = wait_until(
            reply,
            timeout=timeout or self.command_timeout,
            what=f"phone {self.user}: reply to {cmd}",
            interval=POLL_INTERVAL,
        )
        if result is _DEAD:
            raise PhoneError(f"phone {self.user} exited during {cmd}; log tail:\n{self.log_tail()}")
        if not result.get("ok"):
            raise PhoneError(f"phone {self.user}: {cmd} failed: {result.get('error')}")
        return result

    # ----------------------------------------------------------------- events

    def events(self, name: str | None = None, *, since: int = 0) -> list[Event]:
        """A copy of the events (of type ``name``) received from position ``since``."""
        with self._lock:
            return [e for e in self._events[since:] if name is None or e.get("event") == name]

    def mark(self) -> int:
        """The current event position, for ``since=`` in later waits."""
        with self._lock:
            return len(self._events)

    def wait_event(
        self,
        predicate: Callable[[Event], object],
        *,
        timeout: float = 5.0,
        since: int = 0,
        what: str | None = None,
    ) -> Event:
        """First event at or after ``since`` for which ``predicate`` is truthy (waits up to ``timeout``)."""
        return self._wait_for_event(predicate, since, timeout, what or f"an event of phone {self.user}")

    def _wait_for_event(self, predicate: Callable[[Event], object], since: int, timeout: float, what: str) -> Event:
        """How :meth:`wait_event` waits: polls the event list (a subclass may wait on a condition)."""

        def find() -> Event | None:
            with self._lock:
                for event in self._events[since:]:
                    if predicate(event):
                        return event
            return None if self._alive() else _DEAD

        found = wait_until(find, timeout=timeout, what=what, interval=POLL_INTERVAL)
        if found is _DEAD:
            raise PhoneError(f"phone {self.user} exited while waiting for {what}; log tail:\n{self.log_tail()}")
        return found

    def wait_for(self, event: str, *, timeout: float = 5.0, since: int = 0, **fields: Any) -> Event:
        """First ``event`` whose fields equal ``fields`` (e.g. ``call="c1", state="CONFIRMED"``)."""
        desc = ", ".join(f"{k}={v!r}" for k, v in fields.items())

        def match(e: Event) -> bool:
            return e.get("event") == event and all(e.get(k) == v for k, v in fields.items())

        return self.wait_event(match, timeout=timeout, since=since, what=f"{self.user}: {event}({desc})")

    def wait_state(self, call: str, state: str, *, timeout: float = 5.0, since: int = 0) -> Event:
        return self.wait_for("call_state", call=call, state=state, timeout=timeout, since=since)

    def wait_incoming(self, *, timeout: float = 5.0, since: int = 0) -> str:
        """Handle of the first incoming call at or after ``since``."""
        return str(self.wait_for("incoming", timeout=timeout, since=since)["call"])

    # ----------------------------------------------------------------- calls

    def register(self, *, timeout: float = 5.0) -> Event:
        """REGISTER with the registrar and wait for a 2xx ``reg_state``."""
        since = self.mark()
        self.command("register")
        return self.wait_event(
            lambda e: e["event"] == "reg_state" and 200 <= e["code"] < 300,
            timeout=timeout,
            since=since,
            what=f"{self.user} registered",
        )

    def unregister(self, *, timeout: float = 5.0) -> Event:
        since = self.mark()
        self.command("unregister")
        return self.wait_for("reg_state", timeout=timeout, since=since, active=False)

    def call(self, uri: str, headers: Mapping[str, str] | None = None) -> str:
        """INVITE ``uri``; returns the call handle."""
        return str(self.command("call", uri=uri, headers=dict(headers or {}))["call"])

    def answer(
        self, call: str, code: int = 200, headers: Mapping[str, str] | None = None, *, sendonly: bool = False
    ) -> None:
        self.command("answer", call=call, code=code, headers=dict(headers or {}), sendonly=sendonly)

    def reject(self, call: str, code: int = 486, headers: Mapping[str, str] | None = None) -> None:
        self.command("reject", call=call, code=code, headers=dict(headers or {}))

    def reject_with_redirect(
        self, call: str, contact: str, code: int = 302, headers: Mapping[str, str] | None = None
    ) -> None:
        """Answer an incoming call with a 3xx carrying exactly ``contact``."""
        self.command("redirect", call=call, contact=contact, code=code, headers=dict(headers or {}))

    def hangup(self, call: str) -> None:
        self.command("hangup", call=call)

    def hangup_all(self) -> None:
        self.command("hangup_all")

    def blind_transfer(self, call: str, target_uri: str, *, hangup: bool = True) -> None:
        """REFER the peer of ``call`` to ``target_uri``; our leg ends on the final 2xx."""
        self.command("blind_transfer", call=call, target=target_uri, hangup=hangup)

    def attended_transfer(self, call_a: str, call_b: str, *, hangup: bool = True) -> str:
        """REFER call_a's peer to call_b's peer with Replaces of call_b; returns the Refer-To."""
        return str(self.command("attended_transfer", call=call_a, replaces_call=call_b, hangup=hangup)["refer_to"])

    def calls(self) -> list[Event]:
        """Summaries of the live calls (handle, state, tags, remote URI/Contact, ...)."""
        return list(self.command("calls")["calls"])

    def call_info(self, call: str) -> Event:
        return dict(self.command("call_info", call=call)["info"])

    def call_state(self, call: str) -> str:
        return str(self.call_info(call)["state"])

    def received_header(self, call: str, name: str, which: str = "answer") -> str | None:
        """Header ``name`` of the 2xx we got (``answer``), the INVITE (``invite``) or ``last``."""
        value = self.command("received_header", call=call, name=name, which=which)["value"]
        return None if value is None else str(value)

    def received_message(self, call: str, which: str = "answer") -> str | None:
        value = self.command("received_message", call=call, which=which)["message"]
        return None if value is None else str(value)

    def messages(self) -> list[Event]:
        """SIP MESSAGEs received so far (from, to, content_type, body, x_headers)."""
        return list(self.command("messages")["messages"])

    def send_message(self, to: str, body: str, content_type: str = "text/plain") -> None:
        self.command("send_message", to=to, body=body, content_type=content_type)

    def send_dtmf(self, call: str, digits: str) -> None:
        self.command("dtmf", call=call, digits=digits)

    def play_tone(self, call: str, freq_hz: float, *, level: float = 0.5) -> Path:
        """Loop a sine tone into ``call`` until stop_play or the call ends."""
        return Path(self.command("play_tone", call=call, freq=freq_hz, level=level)["path"])

    def play_file(self, call: str, path: Path | str, *, loop: bool = True) -> None:
        self.command("play_file", call=call, path=str(path), loop=loop)

    def stop_play(self, call: str) -> None:
        self.command("stop_play", call=call)

    def record(self, call: str, seconds: float) -> Path:
        """Record what we hear on ``call`` for ``seconds``; returns the WAV path."""
        reply = self.command("record", call=call, seconds=seconds, timeout=seconds + self.command_timeout)
        path = Path(reply["path"])
        # pjsua 2.15 removes conference ports asynchronously: the WAV header and data may be
        # written a few ms after the reply. Wait for a parseable file with the frames we asked for.
        wanted = seconds if reply.get("complete", True) else 0.0
        wait_until(lambda: _wav_seconds(path) >= 0.9 * wanted, timeout=2.0, what=f"{path.name} written")
        return path

    def set_auto_answer(self, code: int | None = 200, headers: Mapping[str, str] | None = None) -> None:
        self.command("set_auto_answer", code=code, headers=dict(headers or {}))

    def set_accept_redirects(self, accept: bool) -> None:
        self.command("set_accept_redirects", accept=accept)

    def set_accept_transfers(self, accept: bool) -> None:
        self.command("set_accept_transfers", accept=accept)


def _flags(values: Mapping[str, object], *, skip_empty: bool = False) -> list[str]:
    """``[flag, value, ...]`` for a command line; with ``skip_empty``, empty values are left out."""
    return [part for flag, value in values.items() if value or not skip_empty for part in (flag, str(value))]


def _wav_seconds(path: Path) -> float:
    """Length of a finished WAV in seconds, or -1 while it cannot be parsed yet."""
    try:
        with wave.open(str(path), "rb") as wav:
            return wav.getnframes() / wav.getframerate()
    except (wave.Error, EOFError, OSError):
        return -1.0
