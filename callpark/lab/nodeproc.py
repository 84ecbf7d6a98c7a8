"""Start and stop a park node process (``callpark node``) and read its ready line.

Used by tests, the local cluster and the drill; the node is stopped by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from prometheus_client.parser import text_string_to_metric_families

from callpark.httpserver import client_context
from callpark.procs import ReadyLineProcess
from callpark.store.access import EtcdAccess, child_args


class NodeProcess(ReadyLineProcess):
    """One ``callpark node`` child process."""

    def __init__(
        self,
        *,
        etcd: str | EtcdAccess,
        pool: str,
        name: str,
        run_dir: Path,
        workers: int = 1,
        edge: str | None = None,
        domain: str | None = None,
        ring_time_s: float = 5.0,
        lease_ttl_s: int = 6,
        keepalive_s: float = 1.0,
        safety_s: float = 1.5,
        extra: Sequence[str] = (),
        http_ca: Path | None = None,
    ) -> None:
        self.name = name
        self.http_ca = http_ca  # trust anchor of the node's HTTPS certificate (--http-cert)
        self.pool = pool
        self.run_dir = run_dir
        argv = [
            sys.executable,
            "-m",
            "callpark.cli",
            *child_args(etcd),
            "node",
            "--pool",
            pool,
            "--name",
            name,
            "--workers",
            str(workers),
            "--run-dir",
            str(run_dir),
            "--ring-time",
            str(ring_time_s),
            "--lease-ttl",
            str(lease_ttl_s),
            "--keepalive",
            str(keepalive_s),
            "--safety",
            str(safety_s),
            *extra,
        ]
        if edge:
            argv += ["--edge", edge]
        if domain:
            argv += ["--domain", domain]
        super().__init__(f"node-{name}", argv, log_path=run_dir / "node.log")

    @property
    def http_port(self) -> int:
        return int(self.info["http"])

    @property
    def http_host(self) -> str:
        """The address the node serves on (its ``--host``), as its workers' SIP addresses show."""
        workers = self.info.get("workers") or [{"sip": "127.0.0.1:0"}]
        return str(workers[0]["sip"]).rsplit(":", 1)[0]

    def worker_sip(self, index: int = 0) -> str:
        """host:port of worker ``index``."""
        return str(self.info["workers"][index]["sip"])

    def park_uri(self, index: int = 0) -> str:
        return f"sip:park@{self.worker_sip(index)}"

    def orbit_uri(self, orbit: str, index: int = 0) -> str:
        return f"sip:{orbit.replace('*', '%2A').replace('#', '%23')}@{self.worker_sip(index)}"

    def get(self, path: str, timeout_s: float = 2.0) -> tuple[int, str]:
        """GET a path of the node's HTTP server: (status, body)."""
        try:
            url = f"{self.info.get('scheme', 'http')}://{self.http_host}:{self.http_port}{path}"
            context = client_context(self.http_ca) if url.startswith("https:") else None
            with urllib.request.urlopen(url, timeout=timeout_s, context=context) as resp:
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample in /metrics (0 when absent)."""
        _, text = self.get("/metrics")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0

    def stop(self, timeout_s: float = 10.0) -> int | None:
        return self.process.stop(timeout=timeout_s)

    def worker_pids(self) -> list[int]:
        """PIDs of the node's live workers (from /api/node; empty if the node is down)."""
        try:
            status, body = self.get("/api/node", timeout_s=1.0)
        except OSError:
            return []
        if status != 200:
            return []
        return [int(w["pid"]) for w in json.loads(body)["workers"] if w.get("pid")]

    def kill9(self) -> None:
        """SIGKILL the supervisor and every worker: the node vanishes as a crashed host would."""
        workers = self.worker_pids()
        self.process.kill9()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def pause(self) -> list[int]:
        """SIGSTOP the supervisor and its workers; returns the PIDs to resume."""
        pids = [self.pid, *self.worker_pids()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        return pids

    @staticmethod
    def resume(pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
