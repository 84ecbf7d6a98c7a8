"""Real etcd members on loopback: ephemeral ports, own data dirs, logs kept, stopped by PID.

Used by ``callpark up``/``demo``, by the pytest fixtures and by the chaos suite. The
server is Debian's ``etcd-server`` 3.4.23 (see docs/ARCHITECTURE.md for why not 3.5.0-2).
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from callpark.errors import CallparkError
from callpark.netutil import LOOPBACK, free_port
from callpark.procs import ManagedProcess
from callpark.waiting import WaitTimeout, wait_until

log = logging.getLogger(__name__)

ETCD_BINARY = "etcd"


class EtcdStartError(CallparkError):
    """A member did not become healthy."""


@dataclass
class EtcdMember:
    """One etcd member process and its addresses."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: ManagedProcess | None = field(default=None, repr=False)

    @property
    def client_url(self) -> str:
        return f"http://{LOOPBACK}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{LOOPBACK}:{self.peer_port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise EtcdStartError(f"etcd member {self.name} is not running")
        return self.process.pid

    def is_running(self) -> bool:
        return self.process is not None and self.process.is_running()

    def healthy(self, timeout_s: float = 0.5) -> bool:
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=timeout_s) as resp:
                return str(json.loads(resp.read().decode()).get("health")) == "true"
        except (OSError, ValueError):
            return False


class LocalEtcdCluster:
    """One etcd cluster of 1 or 3 (any odd number of) members on loopback."""

    def __init__(self, base_dir: Path, *, members: int = 1, name: str = "callpark") -> None:
        if members < 1 or members % 2 == 0:
            raise EtcdStartError(f"an etcd cluster needs an odd number of members, not {members}")
        if shutil.which(ETCD_BINARY) is None:
            raise EtcdStartError("etcd is not installed; run scripts/bootstrap.sh (apt-get install etcd-server)")
        self.base_dir = base_dir
        self.token = f"{name}-{uuid.uuid4().hex[:12]}"
        self.members = [
            EtcdMember(
                name=f"etcd{i}",
                client_port=free_port(),
                peer_port=free_port(),
                data_dir=base_dir / f"etcd{i}" / "data",
                log_path=base_dir / f"etcd{i}" / "etcd.log",
            )
            for i in range(members)
        ]

    @property
    def client_urls(self) -> list[str]:
        return [m.client_url for m in self.members]

    @property
    def endpoints(self) -> str:
        """Comma-separated client URLs, the form ``--etcd`` and ``CALLPARK_ETCD`` take."""
        return ",".join(self.client_urls)

    def start(self, timeout_s: float = 20.0) -> LocalEtcdCluster:
        """Start every member and wait until each reports healthy."""
        try:
            for member in self.members:
                self._spawn(member, initial_state="new")
            self.wait_healthy(timeout_s)
        except BaseException:
            self.stop()
            raise
        log.info("etcd cluster up: %s", self.endpoints)
        return self

    def wait_healthy(self, timeout_s: float = 20.0, members: list[EtcdMember] | None = None) -> None:
        targets = members if members is not None else self.members

        def all_healthy() -> bool:
            for m in targets:
                if m.process is not None:
                    m.process.check_running()
            return all(m.healthy() for m in targets)

        try:
            wait_until(all_healthy, timeout=timeout_s, what="etcd members to report healthy")
        except (WaitTimeout, CallparkError, RuntimeError) as exc:
            tails = "\n".join(f"--- {m.name}:\n{m.process.log_tail(8) if m.process else ''}" for m in targets)
            raise EtcdStartError(f"etcd did not become healthy: {exc}\n{tails}") from None

    def _spawn(self, member: EtcdMember, initial_state: str) -> None:
        member.data_dir.mkdir(parents=True, exist_ok=True)
        initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        argv = [
            ETCD_BINARY,
            "--name",
            member.name,
            "--data-dir",
            str(member.data_dir),
            "--listen-client-urls",
            member.client_url,
            "--advertise-client-urls",
            member.client_url,
            "--listen-peer-urls",
            member.peer_url,
            "--initial-advertise-peer-urls",
            member.peer_url,
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            initial_state,
            "--initial-cluster-token",
            self.token,
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
            "--log-level",
            "warn",
            "--heartbeat-interval",
            "100",
            "--election-timeout",
            "1000",
        ]
        member.process = ManagedProcess(f"etcd:{member.name}", argv, log_path=member.log_path).start()

    # -- faults and recovery (tests and chaos) ------------------------------------------

    def kill(self, index: int) -> None:
        """SIGKILL one member (its data dir is kept, so it can be restarted)."""
        member = self.members[index]
        if member.process is not None:
            member.process.kill9()
            member.process.stop()
            member.process = None

    def pause(self, index: int) -> None:
        if self.members[index].process is not None:
            self.members[index].process.signal(signal.SIGSTOP)  # type: ignore[union-attr]

    def resume(self, index: int) -> None:
        if self.members[index].process is not None:
            self.members[index].process.signal(signal.SIGCONT)  # type: ignore[union-attr]

    def restart(self, index: int, timeout_s: float = 20.0) -> None:
        """Start a stopped member again from its data dir and wait for it."""
        member = self.members[index]
        if member.is_running():
            return
        self._spawn(member, initial_state="existing")
        self.wait_healthy(timeout_s, [member])

    def stop(self) -> None:
        """Stop every member (SIGTERM, then SIGKILL); idempotent."""
        for member in self.members:
            if member.process is not None:
                member.process.stop(timeout=5.0)
                member.process = None

    def __enter__(self) -> LocalEtcdCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
