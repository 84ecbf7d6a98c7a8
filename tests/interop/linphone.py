"""Drive Linphone's console client (Debian ``linphone-cli``, ``linphonec``) from tests.

Each instance gets a private HOME (liblinphone keeps its database and ``~/.linphonerc``
there) and a config file (``-c``) that sets nothing but the SIP and RTP ports: every other
setting is liblinphone's default, including ``[sip] reject_duplicated_calls`` (on), which
is what once made Linphone refuse the takeover INVITE/Replaces. There is no sound card
here, so the client plays and records files (``soundcard use files``), a console command
that changes no call handling.

linphonec reads commands on stdin (one per line) and prints what happens on stdout, which
goes to ``linphonec.log``; ``-d 6 -l liblinphone.log`` keeps liblinphone's own log with the
SIP messages for post-mortems. The process runs in its own session and is stopped by PID
(``quit``, then SIGTERM/SIGKILL of its group).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from types import TracebackType

from callpark.netutil import LOOPBACK, free_port, free_port_block
from callpark.procs import ManagedProcess
from callpark.waiting import WaitTimeout, wait_until

LINPHONEC = shutil.which("linphonec")


def missing() -> str | None:
    """Why linphonec cannot run here (None when it can)."""
    return None if LINPHONEC else "linphonec is not installed (Debian linphone-cli; scripts/bootstrap.sh)"


class Linphone:
    """One linphonec process registered as ``user`` with the edge at ``edge`` (host:port)."""

    def __init__(self, run_dir: Path, user: str, edge: str) -> None:
        if LINPHONEC is None:
            raise RuntimeError("linphonec is not installed")
        self.run_dir = run_dir
        self.user = user
        self.edge = edge
        self.sip_port = free_port(udp_too=True)
        self.rtp_port = free_port_block(10, udp_too=True)
        self.home = run_dir / "home"
        self.config = run_dir / "linphonerc"
        self.log_path = run_dir / "linphonec.log"
        self.process = ManagedProcess(
            f"linphonec-{user}",
            [LINPHONEC, "-S", "-c", str(self.config), "-d", "6", "-l", str(run_dir / "liblinphone.log")],
            log_path=self.log_path,
            env={"HOME": str(self.home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            cwd=run_dir,
            stdin_pipe=True,
        )

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{LOOPBACK}"

    def start(self, timeout: float = 15.0) -> Linphone:
        """Start, use files for sound, register with the edge; wait until registered."""
        (self.home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "[sip]\n"
            f"sip_port={self.sip_port}\n"
            "sip_tcp_port=0\n"
            "sip_tls_port=0\n"
            "[rtp]\n"
            f"audio_rtp_port={self.rtp_port}-{self.rtp_port + 9}\n"
        )
        self.process.start()
        try:
            self.command("soundcard use files")
            self.command(f"register {self.uri} sip:{self.edge} x")
            self.command("status register")

            def registered() -> bool:
                if "registered, identity=" in self.output():
                    return True
                self.command("status register")
                return False

            wait_until(registered, timeout=timeout, interval=0.3, what="linphonec registered")
        except BaseException:
            self.stop()
            raise
        return self

    def command(self, line: str) -> None:
        """Send one console command."""
        self.process.check_running()
        stdin = self.process.popen.stdin
        assert stdin is not None
        stdin.write(line.encode() + b"\n")
        stdin.flush()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def mark(self) -> int:
        """The current end of the output, for ``since=`` in :meth:`wait_output`."""
        return len(self.output())

    def wait_output(self, pattern: str, *, since: int = 0, timeout: float = 10.0, what: str = "") -> str:
        """The first line after ``since`` matching ``pattern`` (a regex)."""
        regex = re.compile(pattern)

        def find() -> str | None:
            self.process.check_running()
            match = regex.search(self.output()[since:])
            return match.group(0) if match else None

        return wait_until(find, timeout=timeout, what=what or f"linphonec output {pattern!r}")

    def wait_call_state(self, state: str, *, timeout: float = 10.0) -> None:
        """Ask ``calls`` until a call in ``state`` (e.g. ``StreamsRunning``) is listed."""

        def listed() -> bool:
            mark = self.mark()
            self.command("calls")
            try:
                self.wait_output(rf"\|\s*{re.escape(state)}\s*\|", since=mark, timeout=1.0, what=state)
            except WaitTimeout:
                return False
            return True

        wait_until(listed, timeout=timeout, interval=0.3, what=f"a call in state {state} in linphonec's list")

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines)

    def stop(self) -> int | None:
        """``quit`` on stdin, then SIGTERM/SIGKILL of the process group by PID (always reaps)."""
        if self.process.is_running():
            try:
                self.command("quit")
                wait_until(lambda: not self.process.is_running(), timeout=3.0, what="linphonec quit")
            except (OSError, WaitTimeout):
                pass
        return self.process.stop(timeout=2.0)

    def __enter__(self) -> Linphone:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
