"""``callpark drill``: the operator's failover drill on the embedded default cluster.

Phases: start the cluster (3 etcd members, two paired pools of nodes, two
controllers, the SIP edge), park N calls from pjsua2 phones, inject a fault, then
check that every parked call is still parked (same orbit, park id, deadline and
ringback count), audible and retrievable, that new parks on the primary's ranges
succeed on the backup, and that failback works. Prints a table per phase and a
verdict, writes JSON (times to detect and to park again, calls taken over, calls lost
with reasons). Exit status 0 only when every check held.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from callpark import tables
from callpark.deployment import Deployment
from callpark.dr.controller import request
from callpark.lab.localcluster import LocalCluster
from callpark.lab.phone import Phone
from callpark.lab.phone.flows import connected_call, hears_music, park_probe, parked_call, talking
from callpark.netutil import LOOPBACK
from callpark.store.kv import KV
from callpark.store.ownership import events, read_snapshot
from callpark.store.schema import Keys
from callpark.waiting import WaitTimeout, wait_until

FAULTS = ("pool-kill", "planned", "node-crash", "controller-crash")


@dataclass
class Phase:
    name: str
    rows: list[tuple[str, bool, str]] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        self.rows.append((what, ok, detail))
        return ok


@dataclass
class DrillReport:
    fault: str
    calls: int
    phases: list[Phase] = field(default_factory=list)
    lost: list[dict[str, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(ok for p in self.phases for _, ok, _ in p.rows)

    def to_json(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "calls": self.calls,
            "verdict": "PASS" if self.passed else "FAIL",
            "numbers": {k: v for p in self.phases for k, v in p.numbers.items()},
            "calls_lost": self.lost,
            "phases": [
                {"phase": p.name, "checks": [{"check": w, "ok": ok, "detail": d} for w, ok, d in p.rows]}
                for p in self.phases
            ],
        }


def park_through_edge(store: KV, parker: Phone, caller: Phone, target: str = "park") -> dict[str, Any]:
    """parker calls caller through the edge, REFERs it to ``target``; returns the parked record."""
    since = parker.mark()
    handle = parker.call(f"sip:{caller.user}@{LOOPBACK}")
    parker.wait_state(handle, "CONFIRMED", since=since, timeout=10)
    parker.blind_transfer(handle, f"sip:{target}@{LOOPBACK}")

    def record() -> dict[str, Any] | None:
        for entry in store.get_prefix(Keys.PARKED).entries.values():
            r = json.loads(entry.value)
            if f"sip:{caller.user}@" in r["caller_uri"] and r["dialog"]["local_tag"] and r["state"] == "parked":
                return dict(r)
        return None

    return wait_until(record, timeout=10, what=f"{caller.user} parked")


class Drill:
    def __init__(self, dep: Deployment, out: TextIO, run_dir: Path, *, fault: str, calls: int) -> None:
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}")
        pools = sorted(dep.state.pools)
        self.primary = next((p for p in pools if dep.state.pools[p].backup), pools[0])
        self.backup = dep.state.pools[self.primary].backup or pools[-1]
        self.dep, self.out, self.run_dir, self.fault, self.n = dep, out, run_dir, fault, calls
        self.report = DrillReport(fault, calls)
        self.phones: list[Phone] = []
        self.cluster = LocalCluster(dep, run_dir / "cluster")

    # -- helpers -----------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def phase(self, name: str) -> Phase:
        phase = Phase(name)
        self.report.phases.append(phase)
        self.say(f"\n== {name}")
        return phase

    def show(self, phase: Phase) -> None:
        self.say(
            tables.render(["CHECK", "RESULT", "DETAIL"], [(w, "ok" if ok else "FAILED", d) for w, ok, d in phase.rows])
        )
        if phase.numbers:
            self.say("  " + ", ".join(f"{k} = {v:.2f}" for k, v in phase.numbers.items()))

    def phone(self, user: str, **kw: Any) -> Phone:
        p = Phone(
            user,
            log_dir=self.run_dir / "phones",
            registrar=self.cluster.edge_address,
            proxy=self.cluster.edge_address,
            **kw,
        )
        self.phones.append(p)
        p.start()
        p.register()
        return p

    def parked(self) -> dict[str, dict[str, Any]]:
        assert self.cluster.store is not None
        return {
            k.rsplit("/", 1)[1]: json.loads(e.value)
            for k, e in self.cluster.store.get_prefix(Keys.PARKED).entries.items()
        }

    def owners(self) -> dict[str, tuple[str, int]]:
        assert self.cluster.store is not None
        snap = read_snapshot(self.cluster.store)
        return {r: (o.pool, o.epoch) for r, o in snap.owners.items()}

    def primary_ranges(self) -> list[str]:
        return sorted(
            r for r, rng in self.dep.state.ranges.items() if rng.pool == self.primary and rng.type.value == "CallPark"
        )

    def park(self, parker: Phone, caller: Phone, target: str = "park") -> dict[str, Any]:
        assert self.cluster.store is not None
        return park_through_edge(self.cluster.store, parker, caller, target)

    # -- the drill -----------------------------------------------------------------------------

    def run(self) -> DrillReport:
        p0 = self.phase(f"0. start the embedded default cluster (fault to inject: {self.fault})")
        self.cluster.start()
        s = self.cluster.started_s
        p0.numbers.update({f"start_{k}_s": v for k, v in s.items()})
        shape = f"{self.dep.etcd.members} etcd, {len(self.cluster.all_nodes())} nodes"
        p0.check("etcd, nodes, edge and controllers up", True, f"{shape}, {len(self.cluster.controllers)} controllers")
        wait_until(lambda: len(self.owners()) >= len(self.dep.state.ranges), timeout=15, what="range owners assigned")
        self.show(p0)
        try:
            parker, retriever, probe = self.phone("parker"), self.phone("carol"), self.phone("probe")
            callers = [self.phone(f"caller{i}", auto_answer=True) for i in range(self.n)]
            p1 = self.phase(f"1. park {self.n} calls on {self.primary}")
            before = {c.user: self.park(parker, c) for c in callers}
            on_primary = all(r["holder"]["node"].startswith(self.primary) for r in before.values())
            p1.check(f"{self.n} calls parked", len(before) == self.n, ", ".join(r["orbit"] for r in before.values()))
            p1.check(f"held by {self.primary} nodes", on_primary)
            self.show(p1)

            self.step(f"2. inject the fault: {self.fault}", lambda p: self.inject(p, probe, before))
            self.step(
                "3. every parked call still parked, audible and retrievable",
                lambda p: self.verify(p, callers, before, retriever),
            )
            if self.fault != "node-crash":
                self.step(f"4. new parks on {self.primary}'s ranges succeed on {self.backup}", self.new_parks)
                self.step(f"5. failback to {self.primary}", self.failback)
        finally:
            for p in self.phones:
                p.stop()
            self.cluster.stop()
        return self.report

    def step(self, name: str, body: Any) -> None:
        """Run one phase; an exception fails the phase with its reason, the drill goes on."""
        phase = self.phase(name)
        try:
            body(phase)
        except Exception as exc:  # noqa: BLE001 - a drill reports every failure, it does not crash
            phase.check("phase completed", False, f"{exc.__class__.__name__}: {exc}")
        self.show(phase)

    def new_parks(self, phase: Phase) -> None:
        first = self.dep.state.ranges[self.primary_ranges()[0]]
        target = str(next(o for o in first.orbits() if o not in self.parked()))
        dana, erin = self.phone("dana", auto_answer=True), self.phone("erin")
        rec = self.park(erin, dana, target=target)
        phase.check(f"directed park on {target}", rec["orbit"] == target, f"held by {rec['holder']['node']}")
        phase.check(f"served by {self.backup}", rec["holder"]["node"].startswith(self.backup))

    def inject(self, phase: Phase, probe: Phone, before: dict[str, dict[str, Any]]) -> None:
        """Inject the fault, time how long until parking works again, then wait for the recovery."""
        t_wall, t0 = time.time(), time.monotonic()
        victim = self._fault(phase, before)
        parks_again = park_probe(probe, f"sip:park@{LOOPBACK}", 30)
        phase.numbers["rto_s"] = parks_again - t0
        phase.check("parking works again", True, f"{parks_again - t0:.2f} s after the fault")
        if victim is not None:  # node-crash: its siblings take its calls over, nothing moves
            moved = wait_until(
                self._taken_over(before, lambda n: not n.startswith(victim)),
                timeout=30,
                what="siblings to take the calls over",
            )
            phase.numbers["takeover_s"] = time.monotonic() - t0
            phase.check("calls of the crashed node taken over by a sibling", bool(moved))
            return
        self._wait_ranges_moved(phase, t_wall)
        if self.fault == "planned":
            return
        what = f"all {len(before)} calls taken over by {self.backup}"
        try:
            wait_until(
                self._taken_over(before, lambda n: n.startswith(self.backup)),
                timeout=30,
                what="the backup pool to take every call over",
            )
            phase.numbers["takeover_s"] = time.monotonic() - t0
            phase.check(what, True)
        except WaitTimeout as exc:
            phase.check(what, False, str(exc))

    def _fault(self, phase: Phase, before: dict[str, dict[str, Any]]) -> str | None:
        """Do the fault; returns the crashed node's name for ``node-crash``, else None."""
        nodes = self.cluster.nodes[self.primary]
        if self.fault == "node-crash":
            victim = next(n for n in nodes if any(r["holder"]["node"] == n.name for r in before.values()))
            victim.kill9()
            phase.check(f"node {victim.name} killed with -9", True)
            return victim.name
        if self.fault == "planned":
            assert self.cluster.store is not None
            request(self.cluster.store, "failover", self.primary)
            phase.check(f"planned failover of {self.primary} requested", True)
            return None
        if self.fault == "controller-crash":
            leader = next(c for c in self.cluster.controllers if c.status().get("leader"))
            leader.kill9()
            phase.check(f"controller leader {leader.name} killed with -9", True)
        for node in nodes:
            node.kill9()
        phase.check(f"all {len(nodes)} {self.primary} nodes killed with -9", True)
        return None

    def _wait_ranges_moved(self, phase: Phase, t_wall: float) -> None:
        """Wait until the backup owns the primary's ranges; note when the controller moved them."""
        what = f"{self.primary}'s ranges owned by {self.backup}"
        try:
            wait_until(
                lambda: all(
                    pool == self.backup for r, (pool, _) in self.owners().items() if r in self.primary_ranges()
                ),
                timeout=30,
                what="ranges to move to the backup",
            )
            epochs = (f"{r} epoch {e}" for r, (_, e) in sorted(self.owners().items()) if r in self.primary_ranges())
            phase.check(what, True, ", ".join(epochs))
        except WaitTimeout as exc:
            phase.check(what, False, str(exc))
        assert self.cluster.store is not None
        event = next(
            (e for e in reversed(events(self.cluster.store, 50)) if e.get("kind") in ("failover", "planned-failover")),
            None,
        )
        if event is not None:
            phase.numbers["detect_and_move_s"] = float(event["at"]) - t_wall

    def _taken_over(self, before: dict[str, dict[str, Any]], node_ok: Any) -> Any:
        def check() -> bool:
            now = self.parked()
            moved = [
                r
                for r in before.values()
                if r["holder"]["node"] not in {n.name for n in self.cluster.all_nodes() if n.process.is_running()}
            ]
            return all(
                r["orbit"] in now
                and node_ok(now[r["orbit"]]["holder"]["node"])
                and now[r["orbit"]]["dialog"]["call_id"] != r["dialog"]["call_id"]
                for r in moved
            )

        return check

    def verify(self, phase: Phase, callers: list[Phone], before: dict[str, dict[str, Any]], retriever: Phone) -> None:
        now = self.parked()
        keys = ("orbit", "park_id", "deadline", "attempts")
        for caller in callers:
            old = before[caller.user]
            new = now.get(old["orbit"])
            kept = new is not None and all(old[k] == new[k] for k in keys)
            phase.check(
                f"{caller.user} on {old['orbit']} still parked",
                kept,
                f"held by {new['holder']['node']}" if new else "record gone",
            )
            if not kept:
                assert self.cluster.store is not None
                hist = self.cluster.store.get(Keys.history(old["park_id"]))
                reason = json.loads(hist.value).get("detail") if hist else "record missing"
                self.report.lost.append({"orbit": old["orbit"], "caller": caller.user, "reason": str(reason)})
                continue
            call = parked_call(caller, str(old["orbit"]))
            phase.check(f"{caller.user} hears the music", hears_music(caller, call))
            since = retriever.mark()
            handle = retriever.call(f"sip:{old['orbit']}@{LOOPBACK}")
            try:
                retriever.wait_state(handle, "CONFIRMED", since=since, timeout=15)
                c_call = connected_call(caller, remote_contains="carol@")
                r_call = connected_call(retriever, remote_contains=f"{caller.user}@")
                phase.check(
                    f"{caller.user} retrieved from {old['orbit']} and audible",
                    talking(caller, c_call, retriever, r_call),
                )
            except WaitTimeout as exc:
                phase.check(f"{caller.user} retrieved from {old['orbit']}", False, str(exc))
            retriever.hangup_all()
        phase.numbers["calls_lost"] = float(len(self.report.lost))

    def failback(self, phase: Phase) -> None:
        for node in list(self.cluster.nodes[self.primary]):
            if not node.process.is_running():
                self.cluster.restart_node(node)
        phase.check(
            f"{self.primary} nodes running", all(n.process.is_running() for n in self.cluster.nodes[self.primary])
        )
        store = self.cluster.store
        assert store is not None
        wait_until(lambda: read_snapshot(store).ready_members(self.primary), timeout=20, what=f"{self.primary} ready")
        request(store, "failback", self.primary)
        try:
            wait_until(
                lambda: all(self.owners()[r][0] == self.primary for r in self.primary_ranges()),
                timeout=20,
                what="failback",
            )
            phase.check(
                f"{self.primary}'s ranges back home",
                True,
                ", ".join(f"{r} epoch {self.owners()[r][1]}" for r in self.primary_ranges()),
            )
        except WaitTimeout as exc:
            phase.check(f"{self.primary}'s ranges back home", False, str(exc))
        frank, gina = self.phone("frank", auto_answer=True), self.phone("gina")
        rec = self.park(gina, frank)
        phase.check(
            f"a new park lands on {self.primary}",
            rec["holder"]["node"].startswith(self.primary),
            f"orbit {rec['orbit']} held by {rec['holder']['node']}",
        )


def run(
    dep: Deployment,
    out: TextIO,
    *,
    fault: str = "pool-kill",
    calls: int = 4,
    run_dir: Path | None = None,
    json_path: Path | None = None,
) -> int:
    base = run_dir or Path(tempfile.mkdtemp(prefix="callpark-drill-"))
    print(f"callpark drill: {dep.path.name}, fault {fault}, {calls} parked calls, run dir {base}", file=out, flush=True)
    drill = Drill(dep, out, base, fault=fault, calls=calls)
    report = drill.run()
    data = report.to_json()
    path = json_path or base / "drill.json"
    path.write_text(json.dumps(data, indent=2))
    numbers = data["numbers"]
    print("\n== report", file=out)
    print(tables.render(["MEASURE", "VALUE"], [(k, f"{v:.2f}") for k, v in numbers.items()]), file=out)
    if report.lost:
        print(
            tables.render(
                ["LOST ORBIT", "CALLER", "REASON"], [(x["orbit"], x["caller"], x["reason"]) for x in report.lost]
            ),
            file=out,
        )
    checks = [ok for p in report.phases for _, ok, _ in p.rows]
    print(f"JSON report: {path}", file=out)
    print(f"verdict: {data['verdict']} ({sum(checks)}/{len(checks)} checks)", file=out, flush=True)
    return 0 if report.passed else 1
