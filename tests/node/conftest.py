"""A park lab per test: real etcd, real node processes, real phones, optionally the SIP edge."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callpark.edge import Edge, EdgeConfig, PoolSpec
from callpark.edge import OrbitRange as EdgeRange
from callpark.lab.etcd import LocalEtcdCluster
from callpark.lab.nodeproc import NodeProcess
from callpark.lab.phone import Phone
from callpark.model import admin
from callpark.model.orbits import OrbitRange
from callpark.netutil import LOOPBACK, free_port
from callpark.store.admin import AdminStore
from callpark.store.etcd import EtcdStore
from callpark.store.kv import Put
from callpark.store.schema import Keys
from callpark.waiting import wait_until

POOL = "pool-a"


class ParkLab:
    """Everything one test starts; ``close()`` stops it all by PID, even after a failure."""

    def __init__(self, root: Path, store: EtcdStore, endpoints: str) -> None:
        self.root = root
        self.store = store
        self.endpoints = endpoints
        self.admin = AdminStore(store)
        self.nodes: list[NodeProcess] = []
        self.phones: list[Phone] = []
        self.edge_port = free_port(udp_too=True)
        self._edge: Edge | None = None
        self.ranges: list[OrbitRange] = []

    @property
    def edge_address(self) -> str:
        return f"{LOOPBACK}:{self.edge_port}"

    def configure(
        self,
        *,
        ranges: tuple[tuple[str, str], ...] = (("7000", "7009"),),
        timeout: str = "00:00:10",
        attempts: int = 1,
        on_timeout_uri: str | None = None,
        music: bool = True,
    ) -> None:
        self.admin.change(lambda s: admin.new_pool(s, POOL, "site-a"))
        for i, (start, end) in enumerate(ranges):
            rng = OrbitRange(f"r{i}", start, end, POOL)
            self.ranges.append(rng)
            self.admin.change(lambda s, r=rng: admin.new_range(s, r))  # type: ignore[misc]
        settings: dict[str, Any] = {
            "CallPickupTimeoutThreshold": timeout,
            "MaxCallPickupAttempts": attempts,
            "EnableMusicOnHold": music,
            "OnTimeoutURI": on_timeout_uri,
        }
        self.admin.change(lambda s: admin.cps_set(s, "global", settings))

    def node(
        self, name: str = "n1", *, workers: int = 1, edge: bool = False, pool: str = POOL, **kwargs: Any
    ) -> NodeProcess:
        node = NodeProcess(
            etcd=self.endpoints,
            pool=pool,
            name=name,
            run_dir=self.root / (name if pool == POOL else f"{pool}-{name}"),
            workers=workers,
            edge=self.edge_address if edge else None,
            **kwargs,
        )
        self.nodes.append(node)
        return node.start()

    def start_edge(self, **security: Any) -> Edge:
        """The SIP edge in front of the started nodes; ``security``: ``trusted_peers``, ``auth``."""
        workers = tuple(str(w["sip"]) for n in self.nodes for w in n.info["workers"])
        config = EdgeConfig(
            port=self.edge_port,
            domain=LOOPBACK,
            pools=(PoolSpec(name=POOL, nodes=workers),),
            ranges=tuple(EdgeRange(start=r.start, end=r.end, pool=POOL, name=r.name) for r in self.ranges),
            **security,
        )
        self._edge = Edge(config, self.root / "edge")
        self._edge.start()
        for worker in workers:
            self._edge.wait_node_state(worker, active=True, timeout=10)
        return self._edge

    def phone(self, user: str, *, via_edge: bool = False, **kwargs: Any) -> Phone:
        if via_edge:
            kwargs.update(registrar=self.edge_address, proxy=self.edge_address)
        phone = Phone(user, log_dir=self.root / "phones", **kwargs)
        self.phones.append(phone)
        phone.start()
        if via_edge:
            phone.register()
        return phone

    def parked(self) -> dict[str, dict[str, Any]]:
        """Every parked record in etcd, by orbit."""
        entries = self.store.get_prefix(Keys.PARKED).entries
        return {k.rsplit("/", 1)[1]: json.loads(e.value) for k, e in entries.items()}

    def wait_parked(self, caller_user: str, timeout: float = 10.0) -> dict[str, Any]:
        """The record of ``caller_user``'s call once it is answered (dialog complete)."""

        def find() -> dict[str, Any] | None:
            for record in self.parked().values():
                d = record["dialog"]
                if f"sip:{caller_user}@" in record["caller_uri"] and d["local_tag"] and record["state"] == "parked":
                    return record
            return None

        return wait_until(find, timeout=timeout, what=f"{caller_user} parked")

    def history(self, park_id: str) -> dict[str, Any] | None:
        entry = self.store.get(Keys.history(park_id))
        return None if entry is None else dict(json.loads(entry.value))

    def wait_outcome(self, park_id: str, timeout: float = 10.0) -> str:
        record = wait_until(lambda: self.history(park_id), timeout=timeout, what=f"outcome of {park_id}")
        return str(record["outcome"])

    def close(self) -> list[str]:
        problems = []
        for phone in self.phones:
            code = phone.stop()
            if code not in (0, None) and not phone.killed:
                problems.append(f"phone {phone.user} exited {code}")
        for node in self.nodes:
            code = node.stop()
            if code not in (0, None):
                problems.append(f"node {node.name} exited {code}: {node.process.log_tail(5)}")
        if self._edge is not None:
            self._edge.stop()
        return problems


@pytest.fixture
def lab(tmp_path: Path, etcd: EtcdStore, etcd_cluster: LocalEtcdCluster) -> Iterator[ParkLab]:
    lab = ParkLab(tmp_path, etcd, etcd_cluster.endpoints)
    try:
        yield lab
    finally:
        problems = lab.close()
    assert not problems, problems


def corrupt(store: EtcdStore, orbit: str, raw: bytes) -> None:
    store.txn([], [Put(Keys.parked(orbit), raw)])
