"""The chaos cluster: the local cluster, laid out so faults can target one node or one pool.

Inside the suite's private network namespace every node gets addresses of its own:
it serves SIP, RTP and HTTP on ``127.0.(10+p).(n+1)`` (``p``: the pool's index, ``n``:
the node's), and reaches etcd through ``127.0.(20+p).(n+1)``, so an iptables rule on
one address cuts exactly that node from etcd, and a /24 cuts a whole pool. One node
can be started with a wall clock that jumps (:mod:`callpark.chaos.skew`), and nodes can
reach etcd through a proxy that swallows etcd's answers on demand
(:mod:`callpark.chaos.proxy`).

Node names collide across pools on purpose: every pool has an ``n1`` and an ``n2``, as
real deployments do, so every scenario checks that a node is ``pool/name`` everywhere
(records, member keys, takeovers). Nodes are therefore named here by :meth:`node_id`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from callpark.chaos.proxy import AnswerSwallower
from callpark.lab.localcluster import LocalCluster
from callpark.lab.nodeproc import NodeProcess
from callpark.store.access import EtcdAccess


@dataclass
class ChaosCluster(LocalCluster):
    """A :class:`LocalCluster` with per-node addresses, colliding names, optional clock skew
    (``skewed_nodes``) and optional answer-swallowing proxies to etcd (``proxied_pools``);
    both hold node ids / pool names."""

    own_addresses: bool = True
    skewed_nodes: set[str] = field(default_factory=set)
    proxied_pools: set[str] = field(default_factory=set)
    proxies: dict[str, AnswerSwallower] = field(default_factory=dict)  # node id -> its proxy

    def __post_init__(self) -> None:
        super().__post_init__()
        self.etcd_listen_all_addresses = self.own_addresses

    def pool_index(self, pool: str) -> int:
        return sorted(self.dep.state.pools).index(pool)

    def node_host(self, pool: str, index: int) -> str:
        return f"127.0.{10 + self.pool_index(pool)}.{index + 1}" if self.own_addresses else "127.0.0.1"

    def etcd_alias(self, pool: str, index: int) -> str:
        """The address node ``index`` of ``pool`` uses to reach etcd."""
        return f"127.0.{20 + self.pool_index(pool)}.{index + 1}" if self.own_addresses else "127.0.0.1"

    def pool_hosts_net(self, pool: str) -> str:
        return f"127.0.{10 + self.pool_index(pool)}.0/24"

    def pool_etcd_net(self, pool: str) -> str:
        return f"127.0.{20 + self.pool_index(pool)}.0/24"

    def node_name(self, pool: str, index: int) -> str:
        return f"n{index + 1}"  # the same in every pool: identities are pool/name

    def node_dir(self, pool: str, name: str) -> Path:
        return self.run_dir / pool / name

    @staticmethod
    def node_id(node: NodeProcess) -> str:
        """``pool/name``: what records, member keys and the checker call a node."""
        return f"{node.pool}/{node.name}"

    def node_etcd(self, pool: str, index: int) -> EtcdAccess | str:
        if not self.own_addresses:
            return self.access
        assert self.etcd is not None
        alias = self.etcd_alias(pool, index)
        if pool in self.proxied_pools:
            node_id = f"{pool}/{self.node_name(pool, index)}"
            if node_id not in self.proxies:  # one proxy per node for the whole run (restarts reuse it)
                targets = [("127.0.0.1", m.client_port) for m in self.etcd.members]
                self.proxies[node_id] = AnswerSwallower(alias, targets).start()
            return self.proxies[node_id].endpoints()
        return ",".join(f"http://{alias}:{m.client_port}" for m in self.etcd.members)

    def node_extra(self, pool: str, index: int) -> list[str]:
        return ["--host", self.node_host(pool, index)] if self.own_addresses else []

    def clock_file(self, node_id: str) -> Path:
        pool, _, name = node_id.partition("/")
        return self.node_dir(pool, name) / "clock-offset"

    def prepare_node(self, node: NodeProcess) -> None:
        if self.node_id(node) not in self.skewed_nodes:
            return
        path = self.clock_file(self.node_id(node))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("0\n")
        argv = node.process.argv
        assert argv[1:3] == ["-m", "callpark.cli"], argv[:3]
        node.process.argv = [sys.executable, "-m", "callpark.chaos.skew", str(path), "--", *argv[3:]]

    def node(self, node_id: str) -> NodeProcess:
        """The node process named ``pool/name``."""
        return next(n for n in self.all_nodes() if self.node_id(n) == node_id)

    def stop(self) -> None:
        super().stop()
        for proxy in self.proxies.values():
            proxy.close()

    def pool_and_index(self, node: NodeProcess) -> tuple[str, int]:
        return node.pool, self.nodes[node.pool].index(node)
