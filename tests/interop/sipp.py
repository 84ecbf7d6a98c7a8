"""Run a committed SIPp scenario as one managed process (ephemeral ports, traces in a directory).

SIPp 3.6.1 (Debian ``sip-tester``) is driven without a terminal: ``-nostdin``, ``-m 1``
(one call, then exit), a global ``-timeout`` that counts as a failure
(``-timeout_error``), and every trace file named explicitly inside ``run_dir``. Exit
status 0 means "all calls were successful"; anything else is a failure whose messages
and unexpected-message trace :meth:`SippRun.diagnostics` returns.
"""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from callpark.netutil import LOOPBACK, free_port, free_port_block
from callpark.procs import ManagedProcess
from callpark.waiting import wait_until

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


class SippRun:
    """One ``sipp -sf <scenario>`` process listening on a fresh loopback UDP port."""

    def __init__(
        self,
        scenario: str,
        run_dir: Path,
        *,
        remote: str | None = None,
        variables: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
        extra: Sequence[str] = (),
    ) -> None:
        if SIPP is None:
            raise RuntimeError("sipp is not installed")
        self.scenario = SCENARIOS / scenario
        self.run_dir = run_dir
        self.port = free_port(udp_too=True)
        self.media_port = free_port_block(4)
        name = self.scenario.stem
        self.messages = run_dir / f"{name}.messages.log"
        self.errors = run_dir / f"{name}.errors.log"
        self.actions = run_dir / f"{name}.actions.log"
        self.screen = run_dir / f"{name}.screen.log"
        argv = [
            SIPP,
            "-sf",
            str(self.scenario),
            "-i",
            LOOPBACK,
            "-p",
            str(self.port),
            "-mi",
            LOOPBACK,
            "-mp",
            str(self.media_port),
            "-m",
            "1",
            "-l",
            "1",
            "-nostdin",
            "-timeout",
            f"{int(timeout_s)}s",
            "-timeout_error",
            "-trace_msg",
            "-message_file",
            str(self.messages),
            "-trace_err",
            "-error_file",
            str(self.errors),
            "-trace_logs",
            "-log_file",
            str(self.actions),
            "-trace_screen",
            "-screen_file",
            str(self.screen),
        ]
        for key, value in (variables or {}).items():
            argv += ["-set", key, value]
        argv += list(extra)
        if remote is not None:
            argv.append(remote)
        self.process = ManagedProcess(f"sipp-{name}", argv, log_path=run_dir / f"{name}.stdout.log", cwd=run_dir)

    @property
    def uri_host(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def uri(self, user: str) -> str:
        return f"sip:{user}@{self.uri_host}"

    def start(self) -> SippRun:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.process.start()
        return self

    def wait_listening(self, timeout: float = 5.0) -> None:
        """Until SIPp has bound its UDP SIP port (or exited: then raise with its log tail)."""

        def bound() -> bool:
            # an exited SIPp stops the wait too; check_running() below says why
            return not self.process.is_running() or _udp_port_busy(self.port)

        wait_until(bound, timeout=timeout, what=f"sipp listening on UDP {self.port}")
        self.process.check_running()

    def wait_exit(self, timeout: float) -> int:
        """SIPp's exit status (0: the call succeeded)."""
        wait_until(lambda: not self.process.is_running(), timeout=timeout, what=f"sipp {self.scenario.name} exit")
        code = self.process.returncode()
        assert code is not None
        return code

    def logged(self, key: str) -> str | None:
        """The last ``key=value`` written by a ``<log>`` action (None if never logged)."""
        try:
            text = self.actions.read_text(errors="replace")
        except OSError:
            return None
        found = re.findall(rf"\b{re.escape(key)}=(\S+)", text)
        return found[-1] if found else None

    def received(self, method_or_code: str, *, call_id_prefix: str = "") -> list[str]:
        """Messages SIPp received whose start line begins with ``method_or_code``.

        ``"BYE"`` matches requests, ``"SIP/2.0 200"`` responses; ``call_id_prefix``
        (e.g. ``"park///"``) keeps the messages of one dialog of the scenario.
        """
        try:
            text = self.messages.read_text(errors="replace")
        except OSError:
            return []
        out = []
        for block in re.split(r"\n-{20,}.*\n", text):
            match = re.search(r"UDP message received \[\d+\] bytes :\s*\n+(.*)", block, re.S)
            if not match:
                continue
            message = match.group(1).strip()
            call_id = re.search(r"^(?:Call-ID|i)\s*:\s*(\S+)", message, re.M | re.I)
            if not message.startswith(method_or_code):
                continue
            if call_id_prefix and not (call_id and call_id.group(1).startswith(call_id_prefix)):
                continue
            out.append(message)
        return out

    def diagnostics(self) -> str:
        parts = [f"sipp argv: {' '.join(self.process.argv)}", f"stdout tail:\n{self.process.log_tail(15)}"]
        for path in (self.errors, self.messages):
            try:
                parts.append(f"{path.name} (tail):\n{path.read_text(errors='replace')[-6000:]}")
            except OSError:
                parts.append(f"{path.name}: (none)")
        return "\n\n".join(parts)

    def stop(self) -> int | None:
        return self.process.stop(timeout=3.0)

    def __enter__(self) -> SippRun:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _udp_port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return True
    return False
