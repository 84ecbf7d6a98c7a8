"""SIPp processes for edge tests: stand-in park nodes and phones (UAS), and REGISTER runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TypedDict, Unpack

from callpark.netutil import LOOPBACK, free_port
from callpark.procs import ManagedProcess
from callpark.waiting import wait_until

SCENARIOS = Path(__file__).parent / "scenarios"
SIPP = shutil.which("sipp") or "/usr/bin/sipp"


def _common(log_dir: Path, name: str) -> list[str]:
    return [
        "-nostdin",
        "-i", LOOPBACK,
        "-f", "3600",  # statistics screen: once an hour, keeps the log small
        "-trace_err", "-error_file", str(log_dir / f"{name}.errors.log"),
    ]  # fmt: skip


class UasOptions(TypedDict, total=False):
    """How a :class:`SippUas` runs: ``scenario`` (file in tests/edge/scenarios, default
    ``uas.xml``), extra ``keys`` for it, a fixed ``port`` (default: a free one), ``extra_args``."""

    scenario: str
    keys: dict[str, str] | None
    port: int | None
    extra_args: tuple[str, ...]


class SippUas:
    """A SIPp UAS on its own UDP port running ``scenario`` (see tests/edge/scenarios)."""

    def __init__(self, name: str, log_dir: Path, **options: Unpack[UasOptions]) -> None:
        scenario = options.get("scenario", "uas.xml")
        keys, port, extra_args = options.get("keys"), options.get("port"), options.get("extra_args", ())
        self.name = name
        self.port = port if port is not None else free_port(udp_too=True)
        all_keys = {"answered_by": name, **(keys or {})}
        argv = [SIPP, "-sf", str(SCENARIOS / scenario), "-p", str(self.port), *_common(log_dir, name)]
        for key, value in all_keys.items():
            argv += ["-key", key, value]
        argv += extra_args
        self.proc = ManagedProcess(f"sipp-{name}", argv, log_path=log_dir / f"{name}.log", cwd=log_dir)

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> SippUas:
        self.proc.start()
        wait_until(lambda: self._bound(), timeout=5.0, what=f"sipp {self.name} to bind udp {self.port}")
        return self

    def _bound(self) -> bool:
        self.proc.check_running()
        # /proc/net/udp lists bound sockets as hex ip:port
        needle = f":{self.port:04X} "
        return needle in Path("/proc/net/udp").read_text()

    def stop(self) -> None:
        self.proc.stop(timeout=2.0)


def register(edge: tuple[str, int], user: str, contact_port: int, log_dir: Path, *, expires: int = 300) -> None:
    """Register ``user`` with the edge for Contact ``sip:user@127.0.0.1:contact_port`` (SIPp).

    :raises AssertionError: when SIPp does not get a 200 OK.
    """
    argv = [
        SIPP, f"{edge[0]}:{edge[1]}",
        "-sf", str(SCENARIOS / "register.xml"),
        "-s", user,
        "-m", "1",
        "-timeout", "10s", "-timeout_error",
        "-key", "contact_port", str(contact_port),
        "-key", "expires", str(expires),
        *_common(log_dir, f"register-{user}"),
    ]  # fmt: skip
    log_path = log_dir / f"register-{user}.log"
    proc = ManagedProcess(f"sipp-register-{user}", argv, log_path=log_path, cwd=log_dir)
    proc.start()
    try:
        code = proc.popen.wait(timeout=15)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        proc.stop(timeout=1.0)
    assert code == 0, f"SIPp REGISTER for {user} failed (exit {code}):\n{proc.log_tail()}"
