"""A DR lab per test: a real 3-member etcd, two paired pools of real nodes, two
controllers and the SIP edge (the embedded default shape), plus phones."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callpark import deployment
from callpark.lab.drill import park_through_edge
from callpark.lab.localcluster import ClusterTimings, LocalCluster
from callpark.lab.phone import Phone
from callpark.store.schema import Keys
from callpark.waiting import wait_until

POOLS_AND_RANGES = """
[[pool]]
name = "pool-a"
site = "site-a"
backup = "pool-b"
nodes = {a_nodes}
workers = {workers}

[[pool]]
name = "pool-b"
site = "site-b"
nodes = {b_nodes}
workers = {workers}

[[range]]
name = "a-park"
start = "7000"
end = "7019"
pool = "pool-a"

[[range]]
name = "b-park"
start = "7200"
end = "7219"
pool = "pool-b"
"""
"""The DR lab's pools and ranges (a ``str.format`` template: node and worker counts)."""

DEPLOYMENT = (
    """
[etcd]
members = 3
"""
    + POOLS_AND_RANGES
    + """
[cps.global]
CallPickupTimeoutThreshold = "{timeout}"
MaxCallPickupAttempts = 1
"""
)


class DrLab:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.cluster: LocalCluster | None = None
        self.phones: list[Phone] = []

    def start(
        self,
        *,
        a_nodes: int = 2,
        b_nodes: int = 2,
        workers: int = 1,
        timeout: str = "00:10:00",
        extra: str = "",
        **timings: Any,
    ) -> LocalCluster:
        """Start the cluster; ``extra`` is appended to the deployment file (e.g. a ``[moh]`` table)."""
        path = self.root / "deployment.toml"
        text = DEPLOYMENT.format(a_nodes=a_nodes, b_nodes=b_nodes, workers=workers, timeout=timeout)
        path.write_text(text + extra)
        dep = deployment.load(path)
        self.cluster = LocalCluster(dep, self.root / "cluster", ClusterTimings(**timings))
        self.cluster.start()
        wait_until(lambda: len(self.owners()) == 2, timeout=15, what="controller to assign range owners")
        return self.cluster

    @property
    def c(self) -> LocalCluster:
        assert self.cluster is not None
        return self.cluster

    def phone(self, user: str, **kwargs: Any) -> Phone:
        p = Phone(
            user, log_dir=self.root / "phones", registrar=self.c.edge_address, proxy=self.c.edge_address, **kwargs
        )
        self.phones.append(p)
        p.start()
        p.register()
        return p

    def owners(self) -> dict[str, tuple[str, int]]:
        assert self.c.store is not None
        out = {}
        for key, entry in self.c.store.get_prefix(Keys.OWNERS).entries.items():
            data = json.loads(entry.value)
            out[key.rsplit("/", 1)[1]] = (str(data["pool"]), int(data["epoch"]))
        return out

    def parked(self) -> dict[str, dict[str, Any]]:
        assert self.c.store is not None
        entries = self.c.store.get_prefix(Keys.PARKED).entries
        return {k.rsplit("/", 1)[1]: json.loads(e.value) for k, e in entries.items()}

    def history(self, park_id: str) -> dict[str, Any] | None:
        assert self.c.store is not None
        entry = self.c.store.get(Keys.history(park_id))
        return None if entry is None else dict(json.loads(entry.value))

    def park(self, parker: Phone, caller: Phone, target: str = "park") -> dict[str, Any]:
        """parker calls caller through the edge and blind-transfers it to ``target``."""
        assert self.c.store is not None
        return park_through_edge(self.c.store, parker, caller, target)

    def close(self) -> None:
        for p in self.phones:
            p.stop()
        if self.cluster is not None:
            self.cluster.stop()


@pytest.fixture
def dr(tmp_path: Path) -> Iterator[DrLab]:
    with contextlib.closing(DrLab(tmp_path)) as lab:
        yield lab
