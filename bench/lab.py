"""Everything one benchmark run starts: etcd, one park node, phones; all stopped by PID.

Only loopback addresses are used. ``close()`` stops phones (in parallel), the node and
etcd, each by the PID it was started with, and is safe after any failure.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from bench.phones import BenchPhone
from callpark.lab.etcd import LocalEtcdCluster
from callpark.lab.nodeproc import NodeProcess
from callpark.model import admin
from callpark.model.orbits import OrbitRange
from callpark.netutil import port_bindable
from callpark.store.admin import AdminStore
from callpark.store.etcd import EtcdStore
from callpark.store.schema import Keys

log = logging.getLogger(__name__)

POOL = "pool-bench"
SITE = "site-bench"
RANGE = ("7000", "7999")
# Long enough that no ringback fires during a run (the node would call the parker).
PICKUP_TIMEOUT = "00:10:00"

T = TypeVar("T")


def port_is_free(port: int) -> bool:
    """Whether ``port`` can be bound on loopback for UDP and TCP right now."""
    return port_bindable(port)


def parallel(fns: Sequence[Callable[[], T]], workers: int = 8) -> list[T]:
    """Run ``fns`` on a small thread pool; results in order; the first error is raised."""
    if not fns:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(fns)))) as pool:
        futures = [pool.submit(fn) for fn in fns]
        return [f.result() for f in futures]


class BenchLab:
    """etcd + one park node + phones for one run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.etcd: LocalEtcdCluster | None = None
        self.store: EtcdStore | None = None
        self.node: NodeProcess | None = None
        self.phones: list[BenchPhone] = []

    # -- start ------------------------------------------------------------------------------

    def start_etcd(self) -> None:
        self.etcd = LocalEtcdCluster(self.root / "etcd", members=1, name="bench")
        self.etcd.start()
        self.store = EtcdStore.connect(self.etcd.endpoints)
        store = AdminStore(self.store)
        store.change(lambda s: admin.new_pool(s, POOL, SITE))
        store.change(lambda s: admin.new_range(s, OrbitRange("bench", RANGE[0], RANGE[1], POOL)))
        settings: dict[str, Any] = {
            "CallPickupTimeoutThreshold": PICKUP_TIMEOUT,
            "MaxCallPickupAttempts": 1,
            "EnableMusicOnHold": True,
            "OnTimeoutURI": None,
        }
        store.change(lambda s: admin.cps_set(s, "global", settings))

    def start_node(self, workers: int) -> NodeProcess:
        assert self.etcd is not None
        node = NodeProcess(
            etcd=self.etcd.endpoints,
            pool=POOL,
            name="bench1",
            run_dir=self.root / "node",
            workers=workers,
            # the lease defaults of a production node (not the tests' short ones)
            lease_ttl_s=10,
            keepalive_s=2.0,
            safety_s=2.0,
        )
        self.node = node
        node.start(timeout_s=60.0 + workers)
        return node

    def phone(self, user: str, **kwargs: Any) -> BenchPhone:
        phone = BenchPhone(user, log_dir=self.root / "phones", start_timeout=30.0, command_timeout=10.0, **kwargs)
        self.phones.append(phone)
        phone.start()
        return phone

    def phones_named(self, users: Sequence[str], **kwargs: Any) -> list[BenchPhone]:
        """Start several phones at once (pjsua2 start-up is mostly CPU; 4 in parallel)."""
        return parallel([functools.partial(self.phone, u, **kwargs) for u in users], workers=4)

    # -- node views -------------------------------------------------------------------------

    def node_view(self) -> dict[str, Any]:
        assert self.node is not None
        status, body = self.node.get("/api/node")
        if status != 200:
            raise RuntimeError(f"/api/node answered {status}: {body[:200]}")
        return dict(json.loads(body))

    def node_pids(self) -> tuple[int, list[int]]:
        """(supervisor PID, worker PIDs) as the node reports them."""
        assert self.node is not None
        workers = [int(w["pid"]) for w in self.node_view()["workers"] if w.get("pid")]
        return self.node.pid, workers

    def metrics_text(self) -> str:
        assert self.node is not None
        return self.node.get("/metrics", timeout_s=5.0)[1]

    def parked_count(self) -> int:
        assert self.store is not None
        return len(self.store.get_prefix(Keys.PARKED).entries)

    def wait_parked_count(self, expected: int, timeout_s: float = 15.0) -> int:
        """Wait until etcd holds ``expected`` parked records; returns the last count seen."""
        deadline = time.monotonic() + timeout_s
        count = self.parked_count()
        while count != expected and time.monotonic() < deadline:
            time.sleep(0.05)
            count = self.parked_count()
        return count

    # -- stop -------------------------------------------------------------------------------

    def close(self) -> list[str]:
        """Stop everything by PID; returns problems (non-zero exits) for the report."""
        problems: list[str] = []

        def stop_phone(phone: BenchPhone) -> str | None:
            try:
                code = phone.stop(timeout=10.0)
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                return f"phone {phone.user}: stop failed: {exc}"
            return None if code in (0, None) else f"phone {phone.user} exited {code}"

        results = parallel([functools.partial(stop_phone, p) for p in self.phones], workers=8)
        problems += [r for r in results if r]
        self.phones.clear()
        if self.node is not None:
            try:
                code = self.node.stop(timeout_s=20.0)
                if code not in (0, None):
                    problems.append(f"node exited {code}: {self.node.process.log_tail(5)}")
            finally:
                self.node = None
        if self.store is not None:
            try:
                self.store.close()
            finally:
                self.store = None
        if self.etcd is not None:
            try:
                self.etcd.stop()
            finally:
                self.etcd = None
        return problems
