"""Start and stop an edge's routing-table sidecar (``callpark edge-sync``), by PID."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from callpark.edge import rpc as jsonrpc
from callpark.edge.routes import ROUTES_HTABLE
from callpark.procs import ManagedProcess
from callpark.store.access import EtcdAccess, child_args
from callpark.waiting import wait_until


class EdgeSyncProcess:
    """One ``callpark edge-sync`` child for one edge."""

    def __init__(
        self, *, etcd: str | EtcdAccess, rpc: str, sets: Mapping[str, int], run_dir: Path, interval_s: float = 0.25
    ) -> None:
        self.rpc = rpc
        argv = [sys.executable, "-m", "callpark.cli", *child_args(etcd), "-v", "edge-sync", "--rpc", rpc]
        argv += [arg for pool, sid in sorted(sets.items()) for arg in ("--set", f"{pool}={sid}")]
        argv += ["--interval", str(interval_s)]
        self.process = ManagedProcess("edge-sync", argv, log_path=run_dir / "edge-sync.log")

    def start(self, timeout_s: float = 15.0) -> EdgeSyncProcess:
        """Start it and wait until the edge holds a table from etcd."""
        self.process.start()
        try:
            wait_until(self.loaded, timeout=timeout_s, what="the edge's routing table loaded from etcd")
        except BaseException:
            self.process.stop()
            raise
        return self

    def loaded(self) -> bool:
        self.process.check_running()
        try:
            reply = jsonrpc.call(self.rpc, "htable.get", ROUTES_HTABLE, "gen")
        except jsonrpc.RpcError:
            return False
        return isinstance(reply, dict) and bool(reply.get("item", {}).get("value"))

    def stop(self) -> int | None:
        return self.process.stop()
