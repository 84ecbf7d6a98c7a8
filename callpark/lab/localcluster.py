"""The embedded default: etcd, park nodes for every pool and the SIP edge, all on loopback.

Used by the README's main job (``callpark demo``), by the failover drill and by tests.
Every process is started with ephemeral ports and stopped by PID in :meth:`stop`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from callpark import deployment
from callpark.edge import Edge, EdgeConfig, PoolSpec
from callpark.edge import OrbitRange as EdgeRange
from callpark.lab.controllerproc import ControllerProcess
from callpark.lab.edgesync import EdgeSyncProcess
from callpark.lab.etcd import LocalEtcdCluster
from callpark.lab.labtls import LabEncryption
from callpark.lab.nodeproc import NodeProcess
from callpark.model.orbits import RangeType
from callpark.netutil import LOOPBACK, free_port
from callpark.store.access import EtcdAccess
from callpark.store.admin import AdminStore
from callpark.store.etcd import EtcdStore

log = logging.getLogger(__name__)


ClusterTimings = deployment.Timings  # the [timings] section of the deployment file


@dataclass
class LocalCluster:
    """etcd + nodes + edge for a deployment file, on loopback."""

    dep: deployment.Deployment
    run_dir: Path
    timings: ClusterTimings | None = None  # default: the deployment file's [timings]
    etcd: LocalEtcdCluster | None = None
    store: EtcdStore | None = None
    edge: Edge | None = None
    edge_sync: EdgeSyncProcess | None = None
    nodes: dict[str, list[NodeProcess]] = field(default_factory=dict)
    controllers: list[ControllerProcess] = field(default_factory=list)
    edge_port: int = 0
    started_s: dict[str, float] = field(default_factory=dict)
    etcd_listen_all_addresses: bool = False  # etcd clients on every address (inside the chaos namespace only)
    encryption: LabEncryption = field(default_factory=LabEncryption)  # [sip_tls], [http]: set by start()

    @property
    def edge_address(self) -> str:
        return f"{LOOPBACK}:{self.edge_port}"

    @property
    def endpoints(self) -> str:
        assert self.etcd is not None
        return self.etcd.endpoints

    @property
    def access(self) -> EtcdAccess:
        """Endpoints plus the ``callpark`` user's TLS files and password file (secure mode)."""
        assert self.etcd is not None
        return self.etcd.access()

    def __post_init__(self) -> None:
        if self.timings is None:
            self.timings = self.dep.timings
        if not self.edge_port:
            self.edge_port = self.dep.edge_port or free_port(udp_too=True)

    @property
    def t(self) -> ClusterTimings:
        assert self.timings is not None
        return self.timings

    def start(self) -> LocalCluster:
        try:
            t0 = time.monotonic()
            e = self.dep.etcd
            self.etcd = LocalEtcdCluster(self.run_dir / "etcd", members=e.members, tls=e.tls, auth=e.auth)
            self.etcd.listen_all_addresses = self.etcd_listen_all_addresses
            self.etcd.start()
            self.started_s["etcd"] = time.monotonic() - t0
            self.store = EtcdStore.connect(self.access)
            deployment.apply(AdminStore(self.store), self.dep)
            self.encryption = LabEncryption.prepare(self.dep.encryption, self.run_dir)
            t0 = time.monotonic()
            for pool in sorted(self.dep.state.pools):
                counts = self.dep.nodes.get(pool, deployment.PoolNodes())
                self.nodes[pool] = [self.start_node(pool, i, counts.workers) for i in range(counts.nodes)]
            self.started_s["nodes"] = time.monotonic() - t0
            t0 = time.monotonic()
            self.edge = Edge(self.edge_config(), self.run_dir / "edge")
            self.edge.start()
            for node in self.all_nodes():
                for w in node.info["workers"]:
                    self.edge.wait_node_state(str(w["sip"]), active=True, timeout=15)
            self.edge_sync = self.start_edge_sync()
            self.started_s["edge"] = time.monotonic() - t0
            t0 = time.monotonic()
            for i in range(self.t.controllers):
                self.controllers.append(self.start_controller(f"controller-{i + 1}"))
            self.started_s["controllers"] = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, pool: str, index: int, workers: int) -> NodeProcess:
        name = self.node_name(pool, index)
        t = self.t
        node = NodeProcess(
            etcd=self.node_etcd(pool, index),
            pool=pool,
            name=name,
            run_dir=self.node_dir(pool, name),
            workers=workers,
            edge=self.edge_address,
            domain=self.dep.sip_domain,
            ring_time_s=t.ring_time_s,
            lease_ttl_s=t.lease_ttl_s,
            keepalive_s=t.keepalive_s,
            safety_s=t.safety_s,
            extra=[
                "--etcd-timeout",
                str(t.etcd_timeout_s),
                *self.dep.sip_security.node_args(),
                *(["--target-domains", ",".join(self.dep.target_domains)] if self.dep.target_domains else []),
                *([] if self.dep.parker_notices else ["--parker-notices", "off"]),
                *self.encryption.http_args,
                *self.node_extra(pool, index),
            ],
            http_ca=self.encryption.http_ca,
        )
        self.prepare_node(node)
        return node.start()

    # Hooks for clusters that place nodes differently (the chaos suite: own addresses, colliding
    # names, a skewed clock, a proxy in front of etcd).
    def node_name(self, pool: str, index: int) -> str:
        """The name of node ``index`` of ``pool`` (unique here; a node's identity is ``pool/name``)."""
        return f"{pool}-n{index + 1}"

    def node_dir(self, pool: str, name: str) -> Path:
        """The run folder of node ``name`` of ``pool``."""
        return self.run_dir / name

    def node_etcd(self, pool: str, index: int) -> EtcdAccess | str:
        """How node ``index`` of ``pool`` reaches etcd."""
        return self.access

    def node_extra(self, pool: str, index: int) -> list[str]:
        """Extra ``callpark node`` arguments for node ``index`` of ``pool``."""
        return []

    def prepare_node(self, node: NodeProcess) -> None:
        """Last look at a node process before it starts."""

    def restart_node(self, node: NodeProcess) -> NodeProcess:
        """Start a stopped node again under the same name (a new process, new ports)."""
        pool = node.pool
        index = self.nodes[pool].index(node)
        fresh = self.start_node(pool, index, len(node.info.get("workers", [])) or 2)
        self.nodes[pool][index] = fresh
        if self.edge is not None:
            workers = tuple(str(w["sip"]) for n in self.nodes[pool] for w in n.info["workers"])
            self.edge.set_pool_nodes(pool, workers)
            for sip in (str(w["sip"]) for w in fresh.info["workers"]):
                self.edge.wait_node_state(sip, active=True, timeout=15)
        return fresh

    def start_edge_sync(self) -> EdgeSyncProcess:
        """The edge's routing table from etcd: ranges added or moved at run time are routed."""
        assert self.edge is not None
        cfg = self.edge.config
        sets = {p.name: cfg.set_id(p.name) for p in cfg.pools}
        return EdgeSyncProcess(etcd=self.access, rpc=self.edge.rpc_endpoint, sets=sets, run_dir=self.run_dir).start()

    def start_controller(self, name: str) -> ControllerProcess:
        t = self.t
        return ControllerProcess(
            etcd=self.access,
            name=name,
            run_dir=self.run_dir / "controllers",
            loop_s=t.controller_loop_s,
            grace_s=t.controller_grace_s,
            ttl_s=t.controller_ttl_s,
            extra=self.encryption.http_args,
            http_ca=self.encryption.http_ca,
        ).start()

    def all_nodes(self) -> list[NodeProcess]:
        return [n for pool in sorted(self.nodes) for n in self.nodes[pool]]

    def edge_config(self) -> EdgeConfig:
        state = self.dep.state
        pools = tuple(
            PoolSpec(
                name=name,
                nodes=tuple(str(w["sip"]) for n in self.nodes.get(name, []) for w in n.info["workers"]),
                backup=state.pools[name].backup,
            )
            for name in sorted(state.pools)
        )
        ranges = tuple(
            EdgeRange(start=r.start, end=r.end, pool=r.pool, name=r.name)
            for r in sorted(state.ranges.values(), key=lambda r: r.name)
            if r.type == RangeType.CALL_PARK
        )
        default_pool = next((p for p in sorted(state.pools) if self.nodes.get(p)), None)
        return EdgeConfig(
            port=self.edge_port,
            domain=self.dep.sip_domain,
            pools=pools,
            ranges=ranges,
            default_pool=default_pool,
            **self.dep.sip_security.edge_fields(),
            tls=self.encryption.edge_tls,
        )

    def stop(self) -> None:
        """Stop everything by PID: controllers, nodes (they free their calls), edge, etcd."""
        for controller in self.controllers:
            controller.stop()
        for node in self.all_nodes():
            try:
                node.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                log.warning("stopping %s: %s", node.name, exc)
        if self.edge_sync is not None:
            self.edge_sync.stop()
        if self.edge is not None:
            self.edge.stop()
        if self.store is not None:
            self.store.close()
        if self.etcd is not None:
            self.etcd.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
