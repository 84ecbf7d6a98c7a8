"""Start and stop a controller process (``callpark controller``), by PID."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from callpark.httpserver import client_context
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
        extra: Sequence[str] = (),
        http_ca: Path | None = None,
    ) -> None:
        self.name = name
        self.http_ca = http_ca  # trust anchor of the controller's HTTPS certificate (--http-cert)
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
            *extra,
        ]
        super().__init__(f"controller-{name}", argv, log_path=run_dir / f"{name}.log")

    def _open(self, path: str) -> Any:
        url = f"{self.info.get('scheme', 'http')}://127.0.0.1:{self.info['http']}{path}"
        context = client_context(self.http_ca) if url.startswith("https:") else None
        return urllib.request.urlopen(url, timeout=2, context=context)

    def status(self) -> dict[str, Any]:
        try:
            with self._open("/api/status") as resp:
                return dict(json.loads(resp.read()))
        except (OSError, urllib.error.URLError, ValueError):
            return {}

    def metrics_text(self) -> str:
        with self._open("/metrics") as resp:
            return str(resp.read().decode())

    def log_text(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        self.process.kill9()

    def stop(self) -> int | None:
        return self.process.stop()
