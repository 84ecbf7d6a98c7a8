"""Start and stop a controller process (``callpark controller``), by PID."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from callpark.procs import ReadyLineProcess
from callpark.store.access import EtcdAccess, child_args


class ControllerProcess(ReadyLineProcess):
    """One ``callpark controller`` child process."""

    def __init__(
        self,
        *,
        etcd: str | EtcdAccess,
        name: str,
        run_dir: Path,
        loop_s: float = 0.5,
        grace_s: float = 1.0,
        ttl_s: int = 4,
    ) -> None:
        self.name = name
        argv = [
            sys.executable,
            "-m",
            "callpark.cli",
            *child_args(etcd),
            "-v",
            "controller",
            "--name",
            name,
            "--loop",
            str(loop_s),
            "--grace",
            str(grace_s),
            "--lease-ttl",
            str(ttl_s),
            "--safety",
            "1.0",
            "--etcd-timeout",
            "0.5",
        ]
        super().__init__(f"controller-{name}", argv, log_path=run_dir / f"{name}.log")

    def status(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.info['http']}/api/status", timeout=2) as resp:
                return dict(json.loads(resp.read()))
        except (OSError, urllib.error.URLError, ValueError):
            return {}

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.info['http']}/metrics", timeout=2) as resp:
            return str(resp.read().decode())

    def log_text(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        self.process.kill9()

    def stop(self) -> int | None:
        return self.process.stop()
