"""``callpark chaos run``: one scenario on a fresh chaos cluster, judged by the checker.

Phases: start the cluster (inside a private network namespace when the scenario needs
network faults), start the workload, then for each nemesis of the scenario: inject,
poll until the fault is proven to have happened, hold the window, heal and wait until
the cluster is whole; with ``--duration`` the nemeses repeat until it is spent. Then
stop the workload (every call ends), replay etcd's history, check every invariant,
write ``history.jsonl``, ``etcd-changes.jsonl``, ``verdict.json`` and the logs to the
run folder, and print a summary table. Exit 0 only when every invariant held.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from callpark import deployment, tables
from callpark.chaos import checker, netns
from callpark.chaos.bounds import Bounds
from callpark.chaos.cluster import ChaosCluster
from callpark.chaos.firewall import Firewall
from callpark.chaos.history import History, Op
from callpark.chaos.nemesis import NEMESES, Context, Nemesis
from callpark.chaos.scenarios import nemeses_of
from callpark.chaos.workload import Workload, WorkloadConfig
from callpark.lab.phone import Phone
from callpark.lab.phone.flows import park_probe
from callpark.netutil import LOOPBACK
from callpark.store.ownership import read_snapshot
from callpark.store.schema import Keys
from callpark.waiting import WaitTimeout, wait_until

CHAOS_FILE = deployment.DEFAULT_LOCAL_FILE.parent / "chaos-cluster.toml"
RTO_BOUND_S = 3.0  # the brief's number: parking works again within 3 s of losing a pool


@dataclass
class RunConfig:
    scenario: str
    seed: int
    duration_s: float  # 0: each nemesis once
    out: Path
    pairs: int = 3
    rate: float = 1.0
    window_s: float = 0.0  # 0: each nemesis's own window
    rto_bound_s: float = RTO_BOUND_S
    config: Path = CHAOS_FILE

    def cli_args(self) -> list[str]:
        """The ``callpark chaos run`` options that give this run (to run it again in a namespace)."""
        return [
            *("--scenario", self.scenario, "--seed", str(self.seed), "--duration", str(self.duration_s)),
            *("--out", str(self.out), "--pairs", str(self.pairs), "--rate", str(self.rate)),
            *("--window", str(self.window_s)),
        ]


def needs_netns(scenario: str) -> bool:
    return any(NEMESES[n].needs_netns for n in nemeses_of(scenario))


class Run:
    def __init__(self, cfg: RunConfig, out: TextIO) -> None:
        self.cfg, self.out = cfg, out
        self.rng = random.Random(cfg.seed)
        self.history = History(cfg.out / "history.jsonl")
        dep = deployment.load(cfg.config)
        pools = sorted(dep.state.pools)
        self.primary = next((p for p in pools if dep.state.pools[p].backup), pools[0])
        self.backup = dep.state.pools[self.primary].backup or pools[-1]
        own = netns.inside()
        names = nemeses_of(cfg.scenario)
        skewed = {f"{self.primary}/n2"} if "clock-jump" in names else set()
        proxied = {self.primary} if own and "unknown-outcome" in names else set()
        self.cluster = ChaosCluster(
            dep, cfg.out / "cluster", own_addresses=own, skewed_nodes=skewed, proxied_pools=proxied
        )
        self.firewall = Firewall() if own else None
        self.bounds = Bounds(self.cluster.t)
        self.pickup_s = float(dep.state.settings("global").call_pickup_timeout_s)  # CallPickupTimeoutThreshold
        self.workload: Workload | None = None
        self.probe: Phone | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def run(self) -> checker.Report:
        names = nemeses_of(self.cfg.scenario)
        t0 = time.monotonic()
        self.cluster.start()
        store = self.cluster.store
        assert store is not None
        wait_until(
            lambda: len(read_snapshot(store).owners) >= 2, timeout=self.bounds.whole_s, what="range owners assigned"
        )
        nodes = ", ".join(self.cluster.node_id(n) for n in self.cluster.all_nodes())
        self.say(f"cluster up in {time.monotonic() - t0:.1f} s: {nodes}")
        wl = WorkloadConfig(pairs=self.cfg.pairs, rate=self.cfg.rate, pickup_timeout_s=self.pickup_s)
        wl.ring_time_s = self.cluster.t.ring_time_s
        wl.settle_s = self.bounds.call_settle_s
        self.workload = Workload(self.history, self.cluster.edge_address, self.cfg.out / "phones", self.cfg.seed, wl)
        self.workload.start()
        self.probe = Phone("probe", log_dir=self.cfg.out / "phones", registrar=self.cluster.edge_address,
                           proxy=self.cluster.edge_address).start()  # fmt: skip
        self.probe.register()
        self._warm_up()
        ctx = Context(self.cluster, self.rng, self.firewall, self.primary, self.backup)
        started = time.monotonic()
        rounds = 0
        while True:
            for name in names:
                self._one(ctx, NEMESES[name]())
            rounds += 1
            if time.monotonic() - started >= self.cfg.duration_s:
                break
        self.say(f"{rounds} round(s) of {len(names)} fault(s); stopping the workload")
        finished = self.workload.stop(timeout_s=self.bounds.scaled(self._cycle_s() + self.bounds.whole_s))
        if not finished:
            self.history.add(Op("runner", "error", time.time(), detail="workload did not stop in time"))
        self._drain()
        changes = store.changes(Keys.ROOT)
        with (self.cfg.out / "etcd-changes.jsonl").open("w") as f:
            for ch in changes:
                f.write(json.dumps({"kind": ch.kind, "key": ch.entry.key, "rev": ch.entry.mod_revision,
                                    "create": ch.entry.create_revision, "lease": ch.entry.lease,
                                    "value": ch.entry.value.decode("utf-8", "replace")}) + "\n")  # fmt: skip
        callers = [p.caller.user for p in self.workload.pairs]
        return checker.check(
            self.history.snapshot(),
            changes,
            logs=sorted(self.cfg.out.rglob("*.log")),
            rto_bound_s=self.cfg.rto_bound_s,
            replaces_capable=callers,
            grace_s=self.bounds.scaled(self.bounds.call_settle_s),
        )

    def _warm_up(self) -> None:
        def parked_once() -> bool:
            return any(o.op == "park" and o.ok for o in self.history.snapshot())

        wait_until(parked_once, timeout=self.bounds.whole_s, what="the workload's first park")

    def _one(self, ctx: Context, nemesis: Nemesis) -> None:
        window = self.cfg.window_s or self._window(nemesis)
        nemesis.window_s = window
        fault = self.history.begin(
            "nemesis",
            "fault",
            fault=nemesis.name,
            data={"pool_fault": nemesis.pool_fault},
        )
        t_inject = time.monotonic()
        probe_thread = None
        try:
            detail = nemesis.inject(ctx)
        except Exception as exc:  # noqa: BLE001 - a fault that could not be injected fails the run
            self.history.finish(fault, False, detail=f"inject failed: {exc.__class__.__name__}: {exc}")
            self.history.add(Op("nemesis", "heal", time.time(), fault=nemesis.name, detail="nothing injected",
                                data={"fault_start": fault.start}))  # fmt: skip
            self.say(f"  {nemesis.name}: could not inject: {exc}")
            return
        if nemesis.pool_fault:
            probe_thread = threading.Thread(target=self._probe, args=(nemesis.name, fault.start, t_inject), daemon=True)
            probe_thread.start()
        happened, proof = self._hold(ctx, nemesis, t_inject, window)
        self.history.finish(fault, happened, detail=f"{detail}; {proof}")
        if probe_thread is not None:
            probe_thread.join(timeout=self.bounds.scaled(2 * self.bounds.whole_s))
        heal = self.history.begin("nemesis", "heal", fault=nemesis.name, data={"fault_start": fault.start})
        try:
            healed = nemesis.heal(ctx)
            self.history.finish(heal, True, detail=healed)
        except Exception as exc:  # noqa: BLE001 - recorded; the checker fails the run
            self.history.finish(heal, False, detail=f"{exc.__class__.__name__}: {exc}")
        self.say(f"  {nemesis.name}: {'happened' if happened else 'DID NOT HAPPEN'} ({proof}); heal: {heal.detail}")

    @staticmethod
    def _hold(ctx: Context, nemesis: Nemesis, t_inject: float, window: float) -> tuple[bool, str]:
        """Keep the fault for its window, polling for the proof that it happened.

        Ends at the window once proven; an unproven fault gets :meth:`Bounds.proof_s` (scaled
        for slow machines) to show its effect, then counts as not happened.
        """
        happened, proof = False, "not checked"
        proven_by = t_inject + window
        give_up = t_inject + ctx.bounds.scaled(ctx.bounds.proof_s(window))
        while True:
            try:
                happened, proof = nemesis.happened(ctx)
            except Exception as exc:  # noqa: BLE001 - e.g. etcd unreachable during the fault
                proof = f"{exc.__class__.__name__}: {exc}"
            now = time.monotonic()
            if (happened and now >= proven_by) or now >= give_up:
                return happened, proof
            time.sleep(0.25)

    def _cycle_s(self) -> float:
        """The longest a parked call lasts once nothing new is parked: its pickup time-out, its
        ringback, and settling (a takeover, a write retried)."""
        return self.pickup_s + self.bounds.call_settle_s

    def _window(self, nemesis: Nemesis) -> float:
        t = self.cluster.t
        if nemesis.name.startswith(("pause-", "partition-")):
            return 2.0 * max(t.lease_ttl_s, t.controller_ttl_s) + 1.0  # longer than the lease: it must expire
        return nemesis.window_leases * t.lease_ttl_s

    def _probe(self, name: str, fault_start: float, t_inject: float) -> None:
        assert self.probe is not None
        op = self.history.begin("probe", "probe", fault=name, data={"fault_start": fault_start, "attempts": []})
        try:
            within = self.bounds.scaled(self.bounds.whole_s)
            parked = park_probe(self.probe, f"sip:park@{LOOPBACK}", within, op.data["attempts"])
            op.data["rto_s"] = round(parked - t_inject, 3)
            self.history.finish(op, True, detail=f"parked after {parked - t_inject:.2f} s")
        except (WaitTimeout, Exception) as exc:  # noqa: BLE001 - recorded
            self.history.finish(op, False, detail=f"{exc.__class__.__name__}: {exc}")

    def _drain(self) -> None:
        """Wait for every parked call to end; hang up any caller still parked after that."""
        store = self.cluster.store
        assert store is not None
        try:
            ended = lambda: not store.get_prefix(Keys.PARKED).entries  # noqa: E731
            wait_until(ended, timeout=self._cycle_s(), what="every parked call ended")
        except WaitTimeout as exc:
            self.history.add(Op("runner", "error", time.time(), detail=str(exc)))

    def close(self) -> None:
        if self.probe is not None:
            self.probe.stop()
        if self.workload is not None:
            self.workload.close()
        self.cluster.stop()


def run(cfg: RunConfig, out: TextIO = sys.stdout) -> int:
    """Run one scenario; print the summary table; 0 when every invariant held."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    print(
        f"callpark chaos: scenario {cfg.scenario}, seed {cfg.seed}, duration {cfg.duration_s:.0f} s, "
        f"{'private network namespace' if netns.inside() else 'host loopback'}, run folder {cfg.out}",
        file=out,
        flush=True,
    )
    started = time.monotonic()
    chaos = Run(cfg, out)
    report: checker.Report | None = None
    error = ""
    try:
        report = chaos.run()
    except Exception as exc:  # noqa: BLE001 - the run failed before it could be checked
        error = f"{exc.__class__.__name__}: {exc}"
    finally:
        chaos.close()
    elapsed = time.monotonic() - started
    if report is None:
        print(f"chaos run aborted: {error}", file=out)
        report = checker.Report([checker.Verdict("run completed", False, 0, [error])], {})
    (cfg.out / "verdict.json").write_text(
        json.dumps({"scenario": cfg.scenario, "seed": cfg.seed, "elapsed_s": elapsed, **report.to_json()}, indent=2)
    )
    print(file=out)
    rows = [
        (v.invariant, "ok" if v.ok else "FAILED", str(v.checked), "; ".join(v.violations)[:160])
        for v in report.verdicts
    ]
    print(tables.render(["INVARIANT", "RESULT", "CHECKED", "VIOLATIONS"], rows), file=out)
    n = report.numbers
    print(file=out)
    print(tables.render(
        ["SCENARIO", "FAULTS", "OPERATIONS", "CALLS LOST", "WORST RTO", "VERDICT"],
        [(cfg.scenario, f"{n.get('faults', 0):.0f}", f"{n.get('operations_ok', 0):.0f}/{n.get('operations', 0):.0f}",
          f"{n.get('calls_lost', 0):.0f}", f"{n.get('worst_rto_s', 0):.2f} s" if n.get("worst_rto_s") else "-",
          "PASS" if report.ok else "FAIL")],
    ), file=out)  # fmt: skip
    print(f"artifacts: {cfg.out}  ({elapsed:.0f} s)", file=out)
    if not report.ok:
        print(
            f"reproduce: callpark chaos run --scenario {cfg.scenario} --seed {cfg.seed} "
            f"--duration {cfg.duration_s:.0f}",
            file=out,
        )
    out.flush()
    return 0 if report.ok else 1
