"""Nemeses: faults with a fixed window, a heal step and a check that the fault really happened.

Every nemesis acts on processes the suite started (by PID) or on traffic inside the
suite's own network namespace. ``inject`` returns what it did, ``happened`` proves the
fault took effect during the window (a partition that dropped no packet, or a kill of
a process that was already gone, tested nothing), ``heal`` undoes it and waits until
the cluster is whole again (every node ready, every range owned, etcd healthy).
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import random
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, ClassVar

from callpark.chaos.bounds import Bounds
from callpark.chaos.cluster import ChaosCluster
from callpark.chaos.firewall import Firewall
from callpark.chaos.nfqueue import Delayer
from callpark.dr.controller import request
from callpark.errors import StoreError
from callpark.lab.controllerproc import ControllerProcess
from callpark.lab.nodeproc import NodeProcess
from callpark.store.etcd import EtcdStore
from callpark.store.kv import Put
from callpark.store.ownership import read_snapshot
from callpark.store.schema import Keys
from callpark.waiting import wait_until


@dataclass
class Context:
    """What a nemesis may touch."""

    cluster: ChaosCluster
    rng: random.Random
    firewall: Firewall | None
    primary: str
    backup: str

    @property
    def bounds(self) -> Bounds:
        """Deadlines from the cluster's configured timings."""
        return Bounds(self.cluster.t)

    @property
    def store(self) -> EtcdStore:
        assert self.cluster.store is not None
        return self.cluster.store

    def parked_by_node(self) -> dict[str, int]:
        """Parked calls per holding node, by ``pool/name``."""
        counts: dict[str, int] = {}
        for entry in self.store.get_prefix(Keys.PARKED).entries.values():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                holder = json.loads(entry.value)["holder"]
                node = f"{holder['pool']}/{holder['node']}"
                counts[node] = counts.get(node, 0) + 1
        return counts

    def busiest_node(self, pool: str) -> NodeProcess:
        """The node of ``pool`` holding the most parked calls (seeded tie-break)."""
        counts = self.parked_by_node()
        nodes = [n for n in self.cluster.nodes[pool] if n.process.is_running()]
        self.rng.shuffle(nodes)
        return max(nodes, key=lambda n: counts.get(self.cluster.node_id(n), 0))

    def leader(self) -> ControllerProcess | None:
        return next((c for c in self.cluster.controllers if c.process.is_running() and c.status().get("leader")), None)

    def members(self, *, ready_only: bool = False) -> set[str]:
        """``pool/name`` of the nodes whose member key exists (whose lease is alive)."""
        snap = read_snapshot(self.store)
        return {m.node_id for pool in snap.members.values() for m in pool if m.ready or not ready_only}

    def wait_whole(self, timeout: float | None = None) -> None:
        """Every node running and ready, etcd healthy, a controller leading, every range owned
        (by default within :attr:`Bounds.whole_s`)."""
        assert self.cluster.etcd is not None
        timeout = self.bounds.whole_s if timeout is None else timeout
        etcd = self.cluster.etcd
        wait_until(lambda: all(m.healthy() for m in etcd.members), timeout=timeout, what="etcd healthy")
        names = {self.cluster.node_id(n) for n in self.cluster.all_nodes()}
        wait_until(lambda: names <= self.members(ready_only=True), timeout=timeout, what="every node ready")
        wait_until(lambda: self.leader() is not None, timeout=timeout, what="a controller leading")

    def failback(self, timeout: float | None = None) -> None:
        """Bring the primary's ranges home (the operator's fenced, explicit failback)."""
        timeout = self.bounds.whole_s if timeout is None else timeout
        home = [r for r, rng in self.cluster.dep.state.ranges.items() if rng.pool == self.primary]

        def owners_home() -> bool:
            owners = read_snapshot(self.store).owners
            return all(owners[r].pool == self.primary for r in home if r in owners)

        if owners_home():
            return
        wait_until(lambda: read_snapshot(self.store).ready_members(self.primary), timeout=timeout, what="primary ready")
        request(self.store, "failback", self.primary)
        wait_until(owners_home, timeout=timeout, what="failback to the primary")


@dataclass
class Nemesis:
    """One fault. Subclasses set ``name``, ``summary`` and implement the three steps."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    pool_fault: ClassVar[bool] = False  # parking must be available again within the RTO bound
    needs_netns: ClassVar[bool] = False
    window_leases: ClassVar[float] = 2.0  # the window, in node lease TTLs (unless the runner knows better)
    window_s: float = 10.0
    state: dict[str, Any] = field(default_factory=dict)

    def inject(self, ctx: Context) -> str:
        raise NotImplementedError

    def happened(self, ctx: Context) -> tuple[bool, str]:
        raise NotImplementedError

    def heal(self, ctx: Context) -> str:
        raise NotImplementedError


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1].startswith("Z")
    return False


def _stopped(pid: int) -> bool:
    with contextlib.suppress(OSError, IndexError), open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] == "T"
    return False


class KillWorker(Nemesis):
    name = "kill-worker"
    summary = "kill -9 one pjsua2 worker of the busiest primary node; siblings take its calls over"

    def inject(self, ctx: Context) -> str:
        node = ctx.busiest_node(ctx.primary)
        pids = node.worker_pids()
        pid = ctx.rng.choice(pids)
        os.kill(pid, signal.SIGKILL)
        self.state.update(node=ctx.cluster.node_id(node), pid=pid, workers=len(pids))
        return f"worker pid {pid} of {self.state['node']} killed with -9"

    def happened(self, ctx: Context) -> tuple[bool, str]:
        gone = _gone(int(self.state["pid"]))
        return gone, f"pid {self.state['pid']} {'gone' if gone else 'still alive'}"

    def heal(self, ctx: Context) -> str:
        node = ctx.cluster.node(str(self.state["node"]))
        wait_until(
            lambda: len(node.worker_pids()) >= int(self.state["workers"]),
            timeout=ctx.bounds.worker_respawn_s,
            what="the worker respawned",
        )
        ctx.wait_whole()
        return f"{self.state['node']} back to {self.state['workers']} workers"


class KillNode(Nemesis):
    name = "kill-node"
    summary = "kill -9 the busiest primary node (supervisor and workers); its calls are taken over"

    def inject(self, ctx: Context) -> str:
        node = ctx.busiest_node(ctx.primary)
        self.state.update(node=ctx.cluster.node_id(node), pid=node.pid)
        node.kill9()
        return f"{self.state['node']} (pid {node.pid}) killed with -9"

    def happened(self, ctx: Context) -> tuple[bool, str]:
        gone = _gone(int(self.state["pid"]))
        return gone, f"{self.state['node']} {'gone' if gone else 'still running'}"

    def heal(self, ctx: Context) -> str:
        ctx.cluster.restart_node(ctx.cluster.node(str(self.state["node"])))
        ctx.wait_whole()
        return f"{self.state['node']} restarted"


class KillPool(Nemesis):
    name = "kill-pool"
    summary = "kill -9 every node of the primary pool; the backup takes its ranges and calls"
    pool_fault = True

    def inject(self, ctx: Context) -> str:
        nodes = ctx.cluster.nodes[ctx.primary]
        self.state["pids"] = [n.pid for n in nodes]
        for n in nodes:
            n.kill9()
        return f"all {len(nodes)} nodes of {ctx.primary} killed with -9"

    def happened(self, ctx: Context) -> tuple[bool, str]:
        moved = _ranges_moved(ctx)
        dead = all(_gone(p) for p in self.state["pids"])
        return dead and moved, f"nodes dead: {dead}; ranges moved to {ctx.backup}: {moved}"

    def heal(self, ctx: Context) -> str:
        for n in list(ctx.cluster.nodes[ctx.primary]):
            ctx.cluster.restart_node(n)
        ctx.wait_whole()
        ctx.failback()
        return f"{ctx.primary} restarted and failed back"


def _ranges_moved(ctx: Context) -> bool:
    home = [r for r, rng in ctx.cluster.dep.state.ranges.items() if rng.pool == ctx.primary]
    try:
        owners = read_snapshot(ctx.store).owners
    except StoreError:
        return False
    return all(owners[r].pool == ctx.backup for r in home if r in owners)


class KillController(Nemesis):
    name = "kill-controller-leader"
    summary = "kill -9 the leading failover controller; the standby takes over leadership"
    leader: ClassVar[bool] = True

    def _victim(self, ctx: Context) -> ControllerProcess:
        leader = ctx.leader()
        if self.leader:
            assert leader is not None, "no controller is leading"
            return leader
        return next(c for c in ctx.cluster.controllers if c is not leader and c.process.is_running())

    def inject(self, ctx: Context) -> str:
        victim = self._victim(ctx)
        self.state.update(name=victim.name, pid=victim.pid)
        victim.kill9()
        return f"controller {victim.name} ({'leader' if self.leader else 'standby'}) killed with -9"

    def happened(self, ctx: Context) -> tuple[bool, str]:
        gone = _gone(int(self.state["pid"]))
        if not self.leader:
            return gone, f"{self.state['name']} gone: {gone}"
        new = ctx.leader()
        ok = gone and new is not None and new.name != self.state["name"]
        return ok, f"{self.state['name']} gone: {gone}; new leader: {new.name if new else None}"

    def heal(self, ctx: Context) -> str:
        controllers = ctx.cluster.controllers
        index = next(i for i, c in enumerate(controllers) if c.name == self.state["name"])
        controllers[index].stop()
        controllers[index] = ctx.cluster.start_controller(str(self.state["name"]))
        ctx.wait_whole()
        return f"{self.state['name']} restarted"


class KillStandbyController(KillController):
    name = "kill-controller-standby"
    summary = "kill -9 the standby failover controller; the leader goes on"
    leader = False


class PauseNode(Nemesis):
    name = "pause-node"
    summary = "SIGSTOP the busiest primary node for longer than its lease, then SIGCONT; it must not serve stale"

    def inject(self, ctx: Context) -> str:
        node = ctx.busiest_node(ctx.primary)
        self.state.update(node=ctx.cluster.node_id(node), pids=node.pause())
        return f"{self.state['node']} and its workers stopped (SIGSTOP)"

    def happened(self, ctx: Context) -> tuple[bool, str]:
        name = str(self.state["node"])
        stopped = all(_stopped(p) for p in self.state["pids"])
        expired = name not in ctx.members()
        return stopped and expired, f"{name} stopped: {stopped}; lease expired (member key gone): {expired}"

    def heal(self, ctx: Context) -> str:
        NodeProcess.resume(list(self.state["pids"]))
        node = ctx.cluster.node(str(self.state["node"]))
        if not node.process.is_running():
            ctx.cluster.restart_node(node)
        ctx.wait_whole()
        return f"{self.state['node']} resumed (SIGCONT)"


class PauseController(Nemesis):
    name = "pause-controller-leader"
    summary = "SIGSTOP the leading controller for longer than its leader TTL, then SIGCONT"

    def inject(self, ctx: Context) -> str:
        leader = ctx.leader()
        assert leader is not None, "no controller is leading"
        self.state.update(name=leader.name, pid=leader.pid)
        os.kill(leader.pid, signal.SIGSTOP)
        return f"controller leader {leader.name} stopped (SIGSTOP)"

    def happened(self, ctx: Context) -> tuple[bool, str]:
        raw = ctx.store.get(Keys.LEADER)
        holder = json.loads(raw.value).get("name") if raw else None
        ok = _stopped(int(self.state["pid"])) and holder not in (None, self.state["name"])
        return ok, f"{self.state['name']} stopped; leader key now held by {holder}"

    def heal(self, ctx: Context) -> str:
        os.kill(int(self.state["pid"]), signal.SIGCONT)
        ctx.wait_whole()
        return f"{self.state['name']} resumed (SIGCONT)"


def _etcd_leader(ctx: Context) -> int | None:
    assert ctx.cluster.etcd is not None
    for i, m in enumerate(ctx.cluster.etcd.members):
        if not m.is_running():
            continue
        proc = subprocess.run(
            ["etcdctl", f"--endpoints={m.client_url}", "--command-timeout=2s", "endpoint", "status", "-w", "json"],
            capture_output=True,
            text=True,
            check=False,
            env=dict(os.environ, ETCDCTL_API="3"),
        )
        with contextlib.suppress(ValueError, IndexError, KeyError):
            status = json.loads(proc.stdout)[0]["Status"]
            if status["header"]["member_id"] == status["leader"]:
                return i
    return None


def _leader_found(ctx: Context) -> tuple[int] | None:
    leader = _etcd_leader(ctx)
    return None if leader is None else (leader,)


class KillEtcdMember(Nemesis):
    name = "kill-etcd-follower"
    summary = "kill -9 one etcd follower (a minority); no visible impact beyond latency"
    kill_leader: ClassVar[bool] = False

    def inject(self, ctx: Context) -> str:
        assert ctx.cluster.etcd is not None
        # a one-tuple, because member 0 is a leader too (and 0 is falsy)
        (leader,) = wait_until(lambda: _leader_found(ctx), timeout=2 * ctx.bounds.etcd_s, what="an etcd leader")
        self.state["leader"] = leader
        n = len(ctx.cluster.etcd.members)
        index = leader if self.kill_leader else ctx.rng.choice([i for i in range(n) if i != leader])
        member = ctx.cluster.etcd.members[index]
        self.state.update(index=index, pid=member.pid)
        ctx.cluster.etcd.kill(index)
        return f"etcd member {member.name} ({'leader' if self.kill_leader else 'follower'}) killed with -9"

    def happened(self, ctx: Context) -> tuple[bool, str]:
        gone = _gone(int(self.state["pid"]))
        if not self.kill_leader:
            return gone, f"member gone: {gone}"
        new = _etcd_leader(ctx)
        return gone and new not in (None, self.state["index"]), f"member gone: {gone}; new etcd leader: {new}"

    def heal(self, ctx: Context) -> str:
        assert ctx.cluster.etcd is not None
        ctx.cluster.etcd.restart(int(self.state["index"]))
        ctx.wait_whole()
        return f"etcd member {self.state['index']} restarted"


class KillEtcdLeader(KillEtcdMember):
    name = "kill-etcd-leader"
    summary = "kill -9 the etcd leader; a new one is elected, leases may outlive their TTL, no double owner"
    kill_leader = True


class EtcdQuorumLoss(Nemesis):
    name = "etcd-quorum-loss"
    summary = "SIGSTOP two of three etcd members (no quorum), then SIGCONT; nodes fence, nothing splits"

    def inject(self, ctx: Context) -> str:
        assert ctx.cluster.etcd is not None
        victims = ctx.rng.sample(range(len(ctx.cluster.etcd.members)), 2)
        self.state["victims"] = victims
        for i in victims:
            ctx.cluster.etcd.pause(i)
        return f"etcd members {victims} stopped (SIGSTOP): no quorum"

    def happened(self, ctx: Context) -> tuple[bool, str]:
        t = ctx.cluster.t.etcd_timeout_s
        probe = EtcdStore.connect(ctx.cluster.endpoints, request_timeout_s=t, retry_deadline_s=2 * t)
        try:
            probe.txn([], [Put(Keys.chaos("quorum-probe"), b"1")])
            return False, "a write succeeded without quorum"
        except StoreError as exc:
            return True, f"writes refused without quorum ({exc.__class__.__name__})"
        finally:
            probe.close()

    def heal(self, ctx: Context) -> str:
        assert ctx.cluster.etcd is not None
        for i in self.state["victims"]:
            ctx.cluster.etcd.resume(i)
        ctx.wait_whole()
        return "etcd members resumed (SIGCONT)"


class PartitionNodeEtcd(Nemesis):
    name = "partition-node-etcd"
    summary = "cut all traffic between the busiest primary node and etcd (iptables); it fences itself"
    needs_netns = True

    def inject(self, ctx: Context) -> str:
        assert ctx.firewall is not None
        node = ctx.busiest_node(ctx.primary)
        pool, index = ctx.cluster.pool_and_index(node)
        alias = ctx.cluster.etcd_alias(pool, index)
        ctx.firewall.cut(self.name, [f"{alias}/32"])
        self.state.update(node=ctx.cluster.node_id(node), alias=alias)
        return f"{self.state['node']} cut from etcd ({alias})"

    def happened(self, ctx: Context) -> tuple[bool, str]:
        assert ctx.firewall is not None
        dropped = ctx.firewall.packets(self.name)
        name = str(self.state["node"])
        expired = name not in ctx.members()
        return dropped > 0 and expired, f"{dropped} packets dropped; {name}'s lease expired: {expired}"

    def heal(self, ctx: Context) -> str:
        assert ctx.firewall is not None
        dropped = ctx.firewall.heal(self.name)
        ctx.wait_whole()
        return f"partition healed ({dropped} packets dropped in all)"


class PartitionPools(Nemesis):
    name = "partition-pools"
    summary = "cut the primary pool from etcd and from the backup pool (iptables); the backup takes over"
    pool_fault = True
    needs_netns = True

    def inject(self, ctx: Context) -> str:
        assert ctx.firewall is not None
        c = ctx.cluster
        ctx.firewall.cut(self.name, [c.pool_etcd_net(ctx.primary)])
        ctx.firewall.cut(self.name, [c.pool_hosts_net(ctx.primary)], [c.pool_hosts_net(ctx.backup)])
        return f"{ctx.primary} ({c.pool_hosts_net(ctx.primary)}) cut from etcd and from {ctx.backup}"

    def happened(self, ctx: Context) -> tuple[bool, str]:
        assert ctx.firewall is not None
        dropped = ctx.firewall.packets(self.name)
        moved = _ranges_moved(ctx)
        return dropped > 0 and moved, f"{dropped} packets dropped; ranges moved to {ctx.backup}: {moved}"

    def heal(self, ctx: Context) -> str:
        assert ctx.firewall is not None
        dropped = ctx.firewall.heal(self.name)
        ctx.wait_whole()
        ctx.failback()
        return f"partition healed ({dropped} packets dropped), failed back"


class SipLossDelay(Nemesis):
    name = "sip-loss-delay"
    summary = "delay SIP/RTP to and from the primary pool by 60±40 ms and drop 3% (NFQUEUE; no netem here)"
    needs_netns = True
    queue: ClassVar[int] = 17

    def inject(self, ctx: Context) -> str:
        assert ctx.firewall is not None
        delayer = Delayer(self.queue, delay_s=0.06, jitter_s=0.04, loss=0.03, seed=ctx.rng.randrange(1 << 30))
        self.state["delayer"] = delayer.start()
        ctx.firewall.queue(self.name, [ctx.cluster.pool_hosts_net(ctx.primary)], self.queue)
        return f"UDP to/from {ctx.cluster.pool_hosts_net(ctx.primary)}: delay 60±40 ms, loss 3%"

    def happened(self, ctx: Context) -> tuple[bool, str]:
        d: Delayer = self.state["delayer"]
        return d.delayed > 0, f"{d.delayed} packets delayed, {d.dropped} dropped"

    def heal(self, ctx: Context) -> str:
        assert ctx.firewall is not None
        ctx.firewall.heal(self.name)
        d: Delayer = self.state["delayer"]
        d.stop()
        ctx.wait_whole()
        return f"delay removed ({d.delayed} delayed, {d.dropped} dropped)"


class ClockJump(Nemesis):
    name = "clock-jump"
    summary = "step one primary node's wall clock 90 s ahead (its process only), then back"
    offset_s: ClassVar[float] = 90.0

    def _node(self, ctx: Context) -> NodeProcess:
        return next(n for n in ctx.cluster.all_nodes() if ctx.cluster.node_id(n) in ctx.cluster.skewed_nodes)

    def inject(self, ctx: Context) -> str:
        node = self._node(ctx)
        self.state["node"] = ctx.cluster.node_id(node)
        ctx.cluster.clock_file(self.state["node"]).write_text(f"{self.offset_s}\n")
        return f"{self.state['node']}'s wall clock stepped {self.offset_s:+.0f} s"

    def happened(self, ctx: Context) -> tuple[bool, str]:
        node = ctx.cluster.node(str(self.state["node"]))
        with urllib.request.urlopen(f"http://{node.http_host}:{node.http_port}/healthz", timeout=2) as resp:
            seen = email.utils.parsedate_to_datetime(resp.headers["Date"]).timestamp()
        skew = seen - time.time()
        return abs(skew - self.offset_s) < 5, f"{self.state['node']} reports a clock {skew:+.1f} s off"

    def heal(self, ctx: Context) -> str:
        ctx.cluster.clock_file(str(self.state["node"])).write_text("0\n")
        ctx.wait_whole()
        return f"{self.state['node']}'s clock back"


def _indeterminate(node: NodeProcess) -> float:
    """Writes whose outcome the node could not tell (the store's StoreIndeterminate), from /metrics."""
    return node.metric("callpark_etcd_errors_total", op="txn", kind="StoreIndeterminate")


def _log_size(node: NodeProcess) -> int:
    with contextlib.suppress(OSError):
        return node.run_dir.joinpath("node.log").stat().st_size
    return 0


def _log_lines_since(node: NodeProcess, offset: int, marker: str) -> int:
    with contextlib.suppress(OSError), node.run_dir.joinpath("node.log").open("rb") as f:
        f.seek(offset)
        return sum(marker in line for line in f.read().decode("utf-8", "replace").splitlines())
    return 0


class UnknownOutcome(Nemesis):
    name = "unknown-outcome"
    summary = (
        "etcd applies the busiest primary node's writes but a proxy drops etcd's answers to them, in pulses "
        "ended by resetting the connections; one of its workers is killed so takeovers are in flight too"
    )
    needs_netns = True  # the proxies sit on the nodes' own etcd addresses
    window_leases = 4.0  # room for several pulses

    def inject(self, ctx: Context) -> str:
        node = ctx.busiest_node(ctx.primary)
        node_id = ctx.cluster.node_id(node)
        proxy = ctx.cluster.proxies.get(node_id)
        assert proxy is not None, f"{node_id} does not reach etcd through a proxy"
        stop = threading.Event()
        t = ctx.cluster.t
        # only answers to writes are dropped (keepalives and reads pass: the node stays a live member);
        # a pulse outlasts two request time-outs and the fail-fast window between them; the reset that
        # ends it hits the writes still waiting; in the gap the node reconnects and writes succeed
        pulse_s = 2 * t.etcd_timeout_s + t.keepalive_s
        gap_s = 2 * t.keepalive_s + t.etcd_timeout_s
        self.state.update(node=node_id, stop=stop, proxy=proxy, before=_indeterminate(node), log=_log_size(node),
                          swallowed=proxy.stats.swallowed_answers, pulses=0)  # fmt: skip

        def pulses() -> None:
            while not stop.is_set():
                proxy.swallow()
                self.state["pulses"] += 1
                stop.wait(pulse_s)
                proxy.release()
                stop.wait(gap_s)

        threading.Thread(target=pulses, daemon=True, name="unknown-outcome").start()
        pids = node.worker_pids()
        victim = ctx.rng.choice(pids) if len(pids) > 1 else None
        if victim is not None:
            os.kill(victim, signal.SIGKILL)  # its calls are taken over by the other worker, unanswered
        self.state.update(workers=len(pids), worker=victim)
        return f"{node_id}: etcd's answers dropped in {pulse_s:.1f} s pulses every {pulse_s + gap_s:.1f} s" + (
            f"; worker pid {victim} killed with -9" if victim is not None else ""
        )

    def happened(self, ctx: Context) -> tuple[bool, str]:
        node = ctx.cluster.node(str(self.state["node"]))
        unknown = _indeterminate(node) - float(self.state["before"])
        swallowed = self.state["proxy"].stats.swallowed_answers - int(self.state["swallowed"])
        seen = _log_lines_since(node, int(self.state["log"]), "outcome unknown")
        ok = unknown > 0 and swallowed > 0
        return ok, (
            f"{swallowed} answers swallowed in {self.state['pulses']} pulse(s); {unknown:.0f} writes of "
            f"{self.state['node']} had an unknown outcome (its metric); {seen} 'outcome unknown' log lines"
        )

    def heal(self, ctx: Context) -> str:
        self.state["stop"].set()
        reset = self.state["proxy"].release()
        node = ctx.cluster.node(str(self.state["node"]))
        wait_until(
            lambda: len(node.worker_pids()) >= int(self.state["workers"]),
            timeout=ctx.bounds.worker_respawn_s,
            what="the worker respawned",
        )
        ctx.wait_whole()
        unknown = _indeterminate(node) - float(self.state["before"])
        return f"answers pass again ({reset} connections reset); {unknown:.0f} writes with an unknown outcome in all"


def _held_by(ctx: Context, node_id: str) -> dict[str, str]:
    """orbit -> park id of the calls ``node_id`` (``pool/name``) holds now."""
    held: dict[str, str] = {}
    for entry in ctx.store.get_prefix(Keys.PARKED).entries.values():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            rec = json.loads(entry.value)
            if f"{rec['holder']['pool']}/{rec['holder']['node']}" == node_id:
                held[str(rec["orbit"])] = str(rec["park_id"])
    return held


def _incarnation(ctx: Context, node_id: str) -> str | None:
    snap = read_snapshot(ctx.store)
    return next((m.incarnation for ms in snap.members.values() for m in ms if m.node_id == node_id), None)


class RestartNamesake(Nemesis):
    name = "restart-namesake"
    summary = (
        "kill -9 and restart the backup-pool node named like the busiest primary node while that namesake "
        "holds parked calls; none of the namesake's calls may be adopted, freed or duplicated"
    )

    def inject(self, ctx: Context) -> str:
        namesake = ctx.busiest_node(ctx.primary)
        namesake_id = ctx.cluster.node_id(namesake)
        victim = next(n for n in ctx.cluster.nodes[ctx.backup] if n.name == namesake.name)
        victim_id = ctx.cluster.node_id(victim)
        held = wait_until(lambda: _held_by(ctx, namesake_id), timeout=ctx.bounds.call_settle_s,
                          what=f"{namesake_id} holding a parked call")  # fmt: skip
        self.state.update(node=victim_id, namesake=namesake_id, held=held, pid=victim.pid,
                          incarnation=_incarnation(ctx, victim_id))  # fmt: skip
        victim.kill9()
        wait_until(lambda: _gone(victim.pid), timeout=ctx.bounds.worker_respawn_s, what=f"{victim_id} gone")
        ctx.cluster.restart_node(victim)
        return f"{victim_id} (pid {victim.pid}) killed with -9 and restarted while {namesake_id} held {sorted(held)}"

    def happened(self, ctx: Context) -> tuple[bool, str]:
        victim_id, namesake_id = str(self.state["node"]), str(self.state["namesake"])
        fresh = _incarnation(ctx, victim_id)
        restarted = _gone(int(self.state["pid"])) and fresh not in (None, self.state["incarnation"])
        held = self.state["held"]
        return restarted and bool(held), (
            f"{victim_id} restarted as incarnation {fresh} (was {self.state['incarnation']}) while {namesake_id} "
            f"held {len(held)} call(s); {namesake_id} holds {sorted(_held_by(ctx, namesake_id))} now"
        )

    def heal(self, ctx: Context) -> str:
        ctx.wait_whole()
        adopted = {o: p for o, p in _held_by(ctx, str(self.state["node"])).items() if o in self.state["held"]}
        if adopted:
            raise AssertionError(f"{self.state['node']} adopted {self.state['namesake']}'s calls {adopted}")
        return f"{self.state['node']} running again; adopted none of {self.state['namesake']}'s calls"


NEMESES: dict[str, type[Nemesis]] = {
    n.name: n
    for n in (
        KillWorker,
        KillNode,
        KillPool,
        KillController,
        KillStandbyController,
        PauseNode,
        PauseController,
        KillEtcdMember,
        KillEtcdLeader,
        EtcdQuorumLoss,
        PartitionNodeEtcd,
        PartitionPools,
        SipLossDelay,
        ClockJump,
        UnknownOutcome,
        RestartNamesake,
    )
}
