"""Drive a headless baresip 1.0.0 from tests: config writer, ctrl_tcp client, process.

baresip runs with a config directory generated per test (``-f DIR``): no terminal UI
(no ``stdio``/``cons`` module), no registrar (an account with ``regint=0`` that takes
direct calls), a 660 Hz sine as microphone (``ausine`` needs 48 kHz stereo) and no
speaker (``aubridge`` with no matching source drops what it is given). It is driven
through ``ctrl_tcp``: netstring-framed JSON commands ``{"command", "params", "token"}``
answered by ``{"response": true, "ok", "data", "token"}``, plus unsolicited events
``{"event": true, "class", "type", "param", "peeruri", "id", ...}``. The long commands
(``dial``, ``accept``, ``hangup``, ``listcalls``, ``quit``, ...) come from the ``menu``
module, so it must be loaded too.

Facts about baresip 1.0.0 this driver relies on:

- ``sip_listen HOST:PORT`` binds UDP and TCP on PORT and TLS on PORT+1, so the SIP
  port is taken from a block of two free ports.
- ``ctrl_tcp`` accepts one connection at a time (a new one replaces the old).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from callpark.netutil import LOOPBACK, free_port, free_port_block
from callpark.procs import ManagedProcess
from callpark.waiting import WaitTimeout, wait_until

BARESIP = shutil.which("baresip")
MODULE_DIRS = (Path("/usr/lib/baresip/modules"), Path("/usr/local/lib/baresip/modules"))
MODULE_PATH = next((d for d in MODULE_DIRS if (d / "ctrl_tcp.so").exists()), MODULE_DIRS[0])
REQUIRED_MODULES = ("g711.so", "ausine.so", "aubridge.so", "account.so", "menu.so", "ctrl_tcp.so")


def missing() -> str | None:
    """Why baresip cannot run here (None when it can): the binary or a module is absent."""
    if BARESIP is None:
        return "baresip is not installed"
    absent = [m for m in REQUIRED_MODULES if not (MODULE_PATH / m).exists()]
    return f"baresip modules missing in {MODULE_PATH}: {', '.join(absent)}" if absent else None


Event = dict[str, Any]


class BaresipError(RuntimeError):
    """A ctrl_tcp command failed, or baresip is gone."""


@dataclass(frozen=True)
class BaresipConfig:
    """What the generated ``config``/``accounts`` files say."""

    user: str = "bare"
    host: str = LOOPBACK
    sip_port: int = 0
    ctrl_port: int = 0
    rtp_port: int = 0
    rtp_range: int = 10
    tone_hz: int = 660
    answermode: str = "manual"  # manual | auto
    registrar: str | None = None  # host:port of the edge: register there (AOR at its host), route through it
    module_path: Path = MODULE_PATH

    @classmethod
    def fresh(cls, **kwargs: Any) -> BaresipConfig:
        """A config on fresh loopback ports (SIP PORT and PORT+1, ctrl, an RTP range)."""
        rtp_range = int(kwargs.get("rtp_range", cls.rtp_range))
        return cls(
            sip_port=_free_sip_port(),
            ctrl_port=free_port(),
            rtp_port=free_port_block(rtp_range),
            **kwargs,
        )

    @property
    def aor(self) -> str:
        if self.registrar:
            return f"sip:{self.user}@{self.registrar.rsplit(':', 1)[0]}"
        return f"sip:{self.user}@{self.host}:{self.sip_port}"

    def config_text(self) -> str:
        lines = [
            ("poll_method", "epoll"),
            ("sip_listen", f"{self.host}:{self.sip_port}"),
            # without this baresip 1.0.0 puts the first non-loopback address in its SDP
            ("net_interface", self.host),
            ("call_local_timeout", "120"),
            ("call_max_calls", "4"),
            ("audio_source", f"ausine,{self.tone_hz}"),
            ("audio_player", "aubridge,nowhere"),
            ("audio_alert", "aubridge,nowhere"),
            ("ausrc_srate", "48000"),
            ("ausrc_channels", "2"),
            ("audio_level", "no"),
            ("rtp_ports", f"{self.rtp_port}-{self.rtp_port + self.rtp_range - 1}"),
            ("rtcp_mux", "no"),
            ("module_path", str(self.module_path)),
            ("module", "g711.so"),
            ("module", "ausine.so"),
            ("module", "aubridge.so"),
            ("module_tmp", "account.so"),
            ("module_app", "menu.so"),
            ("module_app", "ctrl_tcp.so"),
            ("ctrl_tcp_listen", f"{self.host}:{self.ctrl_port}"),
        ]
        return "".join(f"{key}\t\t{value}\n" for key, value in lines)

    def accounts_text(self) -> str:
        codecs = f"answermode={self.answermode};audio_codecs=PCMU/8000/1"
        if self.registrar:
            # registered with the edge, every request through it (outbound proxy)
            return f'<{self.aor}>;regint=600;outbound="sip:{self.registrar}";{codecs}\n'
        # regint=0: no REGISTER; the UA still takes calls sent straight to its address
        return f"<{self.aor}>;regint=0;{codecs}\n"

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config").write_text(self.config_text())
        (directory / "accounts").write_text(self.accounts_text())
        (directory / "contacts").write_text("")
        return directory


class CtrlClient:
    """One ctrl_tcp connection: commands with tokens, and the event log."""

    def __init__(self, host: str, port: int, *, timeout: float = 5.0) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.settimeout(None)
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._responses: dict[str, Event] = {}
        self._tokens = itertools.count(1)
        self._closed = False
        self.timeout = timeout
        self._reader = threading.Thread(target=self._read, name="baresip-ctrl", daemon=True)
        self._reader.start()

    # ------------------------------------------------------------------ framing

    @staticmethod
    def encode(obj: Event) -> bytes:
        data = json.dumps(obj, separators=(",", ":")).encode()
        return str(len(data)).encode() + b":" + data + b","

    @staticmethod
    def decode(buffer: bytearray) -> list[Event]:
        """Pop every complete netstring off ``buffer`` (in place) and JSON-decode it."""
        out: list[Event] = []
        while True:
            colon = buffer.find(b":")
            if colon < 0:
                return out
            length = int(buffer[:colon])
            end = colon + 1 + length
            if len(buffer) < end + 1:
                return out
            if buffer[end : end + 1] != b",":
                raise BaresipError(f"bad netstring terminator in {bytes(buffer[: end + 1])!r}")
            payload = bytes(buffer[colon + 1 : end])
            del buffer[: end + 1]
            obj = json.loads(payload)
            if isinstance(obj, dict):
                out.append(obj)

    def _read(self) -> None:
        buffer = bytearray()
        try:
            while True:
                chunk = self._sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                for obj in self.decode(buffer):
                    with self._lock:
                        if obj.get("response"):
                            self._responses[str(obj.get("token", ""))] = obj
                        elif obj.get("event"):
                            self._events.append(obj)
        except (OSError, ValueError, BaresipError):
            pass
        finally:
            self._closed = True

    # ------------------------------------------------------------------ commands

    def command(self, command: str, params: str | None = None, *, timeout: float | None = None) -> str:
        """Run a long command; returns its text output, raises BaresipError when not ok."""
        token = f"t{next(self._tokens)}"
        message: Event = {"command": command, "token": token}
        if params is not None:
            message["params"] = params
        try:
            self._sock.sendall(self.encode(message))
        except OSError as exc:
            raise BaresipError(f"ctrl_tcp send failed: {exc}") from exc

        def response() -> Event | None:
            with self._lock:
                found = self._responses.pop(token, None)
            if found is None and self._closed:
                raise BaresipError(f"ctrl_tcp closed before the answer to {command}")
            return found

        reply = wait_until(response, timeout=timeout or self.timeout, what=f"baresip: answer to {command}")
        if not reply.get("ok"):
            raise BaresipError(f"baresip {command} {params or ''} failed: {reply.get('data')}")
        return str(reply.get("data", ""))

    def dial(self, uri: str) -> str:
        return self.command("dial", uri)

    def accept(self) -> str:
        return self.command("accept")

    def hangup(self) -> str:
        return self.command("hangup")

    def list_calls(self) -> str:
        return self.command("listcalls")

    def quit(self) -> None:
        with contextlib.suppress(BaresipError, WaitTimeout):
            self.command("quit", timeout=1.0)

    # ------------------------------------------------------------------ events

    def mark(self) -> int:
        with self._lock:
            return len(self._events)

    def events(self, *, since: int = 0) -> list[Event]:
        with self._lock:
            return list(self._events[since:])

    def wait_event(
        self, kind: str, *, since: int = 0, timeout: float = 10.0, where: Callable[[Event], bool] | None = None
    ) -> Event:
        """The first event of type ``kind`` (e.g. ``CALL_ESTABLISHED``) at or after ``since``."""

        def find() -> Event | None:
            for event in self.events(since=since):
                if event.get("type") == kind and (where is None or where(event)):
                    return event
            if self._closed:
                raise BaresipError(f"ctrl_tcp closed while waiting for {kind}")
            return None

        return wait_until(find, timeout=timeout, what=f"baresip event {kind}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._reader.join(timeout=2.0)


class Baresip:
    """A baresip process with its generated config directory and a ctrl_tcp client."""

    def __init__(self, run_dir: Path, config: BaresipConfig | None = None, *, sip_trace: bool = True) -> None:
        if BARESIP is None:
            raise RuntimeError("baresip is not installed")
        self.config = config or BaresipConfig.fresh()
        self.run_dir = run_dir
        self.config_dir = run_dir / "config"
        argv = [BARESIP, "-f", str(self.config_dir)]
        if sip_trace:
            argv.append("-s")  # every SIP message in baresip.log
        self.process = ManagedProcess(
            f"baresip-{self.config.user}",
            argv,
            log_path=run_dir / "baresip.log",
            cwd=run_dir,
        )
        self._ctrl: CtrlClient | None = None

    @property
    def aor(self) -> str:
        return self.config.aor

    @property
    def ctrl(self) -> CtrlClient:
        if self._ctrl is None:
            raise BaresipError("baresip is not started")
        return self._ctrl

    def start(self, timeout: float = 10.0) -> Baresip:
        self.config.write(self.config_dir)
        self.process.start()

        def connected() -> CtrlClient | bool | None:
            if not self.process.is_running():
                return True  # exited: stop waiting, check_running() below says why
            try:
                return CtrlClient(self.config.host, self.config.ctrl_port)
            except OSError:
                return None

        try:
            client = wait_until(connected, timeout=timeout, what="baresip ctrl_tcp listening")
            if not isinstance(client, CtrlClient):
                self.process.check_running()
                raise BaresipError("baresip exited at start")
            self._ctrl = client
            # the UA is up once a command goes through (uuid, account and modules loaded)
            self._ctrl.list_calls()
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines)

    def process_log(self) -> str:
        """Everything baresip printed so far (with ``sip_trace``: every SIP message)."""
        path = self.process.log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> int | None:
        """``quit`` over ctrl_tcp, then SIGTERM/SIGKILL by PID (always reaps)."""
        if self._ctrl is not None:
            if self.process.is_running():
                self._ctrl.quit()
                with contextlib.suppress(WaitTimeout):
                    wait_until(lambda: not self.process.is_running(), timeout=2.0, what="baresip quit")
            self._ctrl.close()
            self._ctrl = None
        return self.process.stop(timeout=2.0)

    def __enter__(self) -> Baresip:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _free_sip_port() -> int:
    """A port free for UDP+TCP whose successor is free for TCP (baresip's TLS listener)."""
    for _ in range(50):
        port = free_port_block(2, udp_too=True)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            try:
                tcp.bind((LOOPBACK, port + 1))
            except OSError:
                continue
        return port
    raise OSError("no free SIP port pair for baresip")
