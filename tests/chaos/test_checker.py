"""The checker catches a deliberately broken build: histories with a double-served orbit,
a lost call, a late failover, two acting leaders, a wrong caller, and faults that did not
happen. Each broken history differs from a passing one in exactly the defect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from callpark.chaos import checker
from callpark.chaos.history import History, Op
from callpark.store.etcd import Change
from callpark.store.kv import Entry
from callpark.store.schema import Keys


class EtcdLog:
    """Builds the etcd history a run would replay, one revision per write."""

    def __init__(self) -> None:
        self.rev = 1
        self.changes: list[Change] = []
        self.created: dict[str, int] = {}

    def put(self, key: str, value: dict[str, Any], lease: int = 0) -> int:
        self.rev += 1
        create = self.created.setdefault(key, self.rev)
        self.changes.append(Change("put", Entry(key, json.dumps(value).encode(), create, self.rev, 1, lease)))
        return self.rev

    def delete(self, key: str) -> None:
        self.rev += 1
        self.created.pop(key, None)
        self.changes.append(Change("delete", Entry(key, b"", 0, self.rev, 0)))

    def park(self, orbit: str, park_id: str, caller: str, node: str, lease: int = 0x10) -> None:
        rec = {"orbit": orbit, "park_id": park_id, "caller_uri": f"sip:{caller}@127.0.0.1", "holder": {"node": node}}
        self.put(Keys.parked(orbit), rec, lease)

    def end(self, orbit: str, park_id: str, outcome: str, detail: str = "") -> None:
        self.delete(Keys.parked(orbit))
        self.put(Keys.HISTORY + park_id, {"park_id": park_id, "orbit": orbit, "outcome": outcome, "detail": detail})


def good_run() -> tuple[list[Op], EtcdLog]:
    """Two calls parked, one retrieved, one rang back; a pool fault with a 1.2 s RTO; one leader."""
    log = EtcdLog()
    log.put(Keys.LEADER, {"name": "controller-1"})
    token = log.created[Keys.LEADER]
    log.put(Keys.owner("pool-a-park"), {"range": "pool-a-park", "pool": "pool-a", "epoch": 1})
    log.park("7000", "p1", "caller0", "pool-a-n1")
    log.park("7001", "p2", "caller1", "pool-a-n1")
    log.put(Keys.owner("pool-a-park"), {"range": "pool-a-park", "pool": "pool-b", "epoch": 2})
    log.put(Keys.EVENTS + "1", {"kind": "failover", "leader": "controller-1", "token": token})
    log.park("7000", "p1", "caller0", "pool-b-n1", lease=0x20)  # taken over by the backup
    log.end("7000", "p1", "retrieved")
    log.end("7001", "p2", "rang-back")
    ops = [
        Op("pair-0", "park", 1.0, 1.1, True, orbit="7000", caller="caller0", park_id="p1"),
        Op("pair-1", "park", 1.0, 1.1, True, orbit="7001", caller="caller1", park_id="p2"),
        Op("nemesis", "fault", 2.0, 8.0, True, fault="kill-pool", data={"pool_fault": True}),
        Op("probe", "probe", 2.0, 3.2, True, fault="kill-pool", data={"fault_start": 2.0, "rto_s": 1.2}),
        Op("nemesis", "heal", 8.0, 9.0, True, fault="kill-pool", data={"fault_start": 2.0}),
        Op("pair-2", "error", 5.0, detail="TimeoutError: no 200 to the park"),  # the pool was down
        Op("pair-0", "retrieve", 9.0, 9.2, True, orbit="7000", caller="caller0", park_id="p1", connected_to="caller0"),
        Op("pair-1", "timeout", 1.1, 12.0, True, orbit="7001", caller="caller1", park_id="p2", connected_to="caller1"),
    ]
    return ops, log


def judge(ops: list[Op], log: EtcdLog, logs: tuple[Path, ...] = ()) -> dict[str, checker.Verdict]:
    report = checker.check(ops, log.changes, logs=logs, rto_bound_s=3.0, replaces_capable=["caller0", "caller1"])
    return {v.invariant: v for v in report.verdicts}


def failed(verdicts: dict[str, checker.Verdict]) -> dict[str, list[str]]:
    return {name: v.violations for name, v in verdicts.items() if not v.ok}


def test_a_clean_history_passes_every_invariant() -> None:
    ops, log = good_run()
    verdicts = judge(ops, log)
    assert failed(verdicts) == {}
    assert all(v.checked > 0 for name, v in verdicts.items() if "BUG" not in name)
    report = checker.check(ops, log.changes, rto_bound_s=3.0)
    assert report.numbers["worst_rto_s"] == 1.2 and report.numbers["calls_lost"] == 0


def test_double_served_orbit_is_caught() -> None:
    ops, log = good_run()
    log.park("7001", "p3", "caller2", "pool-b-n2")  # a second call written onto an orbit still held by p2
    log.changes.insert(-4, log.changes.pop())  # ... before p2 ended
    bad = failed(judge(ops, log))
    assert "orbit 7001 held by p2 and p3" in " ".join(bad["orbit held by one call at a time"])


def test_a_stale_node_writing_after_takeover_is_caught() -> None:
    ops, log = good_run()
    # pool-a-n1 (its old lease) writes p1 again after pool-b-n1 took it over: a fencing failure
    stale = next(c for c in log.changes if c.entry.key == Keys.parked("7000"))
    assert json.loads(stale.entry.value)["holder"]["node"] == "pool-a-n1"
    log.changes.insert(-4, Change("put", stale.entry))
    bad = failed(judge(ops, log))
    assert any("written again by pool-a-n1" in v for v in bad["one node serves an orbit (fencing)"])


def test_a_call_served_to_two_retrievers_is_caught() -> None:
    ops, log = good_run()
    ops.append(Op("pair-9", "retrieve", 9.0, 9.3, True, orbit="7000", caller="caller0", park_id="p1",
                  connected_to="caller0"))  # fmt: skip
    assert "served to 2 retrievers" in " ".join(failed(judge(ops, log))["one node serves an orbit (fencing)"])


def test_a_lost_call_is_caught() -> None:
    ops, log = good_run()
    log.changes = [c for c in log.changes if not c.entry.key.endswith("history/p2")]
    log.put(Keys.HISTORY + "p2", {"park_id": "p2", "orbit": "7001", "outcome": "lost", "detail": "takeover 481"})
    ops = [o for o in ops if o.op != "timeout"]
    bad = failed(judge(ops, log))
    assert "lost: takeover 481" in " ".join(bad["no call of a Replaces-capable caller lost"])


def test_lost_after_the_caller_hung_up_is_not_a_lost_caller() -> None:
    """The takeover of a call whose caller hung up meanwhile gets 481 and records "lost": the
    workload knows the caller had gone, so only a lost call of a caller still there counts."""
    ops, log = good_run()
    log.changes = [c for c in log.changes if not c.entry.key.endswith("history/p2")]
    log.put(
        Keys.HISTORY + "p2", {"park_id": "p2", "orbit": "7001", "outcome": "lost", "detail": "481", "ended_at": 20.0}
    )
    ops = [o for o in ops if o.op != "timeout"]
    late = Op("pair-1", "abandon", 25.0, 25.1, True, orbit="7001", caller="caller1", park_id="p2")
    assert "no call of a Replaces-capable caller lost" in failed(judge([*ops, late], log))
    early = Op("pair-1", "abandon", 12.0, 12.1, True, orbit="7001", caller="caller1", park_id="p2")
    assert failed(judge([*ops, early], log)) == {}
    report = checker.check([*ops, early], log.changes, rto_bound_s=3.0, replaces_capable=["caller1"])
    assert report.numbers["calls_lost"] == 0 and report.numbers["lost_after_caller_hung_up"] == 1


def test_a_call_that_never_ends_and_an_unrecorded_ack_are_caught() -> None:
    ops, log = good_run()
    log.park("7002", "p4", "caller2", "pool-b-n1")
    ops.append(Op("pair-3", "park", 1.0, 1.1, True, orbit="7003", caller="caller3", park_id="p9"))
    bad = failed(judge(ops, log))
    assert "park p4 (orbit 7002" in " ".join(bad["every parked call ends in exactly one outcome"])
    assert "etcd never had it" in " ".join(bad["every acknowledged park is in etcd"])


def test_an_outcome_recorded_twice_is_caught() -> None:
    ops, log = good_run()
    log.put(Keys.HISTORY + "p1", {"park_id": "p1", "orbit": "7000", "outcome": "abandoned"})
    assert "ended 2 times" in " ".join(failed(judge(ops, log))["every parked call ends in exactly one outcome"])


def test_a_late_failover_is_caught() -> None:
    ops, log = good_run()
    probe = next(o for o in ops if o.op == "probe")
    probe.data["rto_s"] = 7.4
    bad = failed(judge(ops, log))
    assert "after 7.40 s, bound 3.00 s" in " ".join(bad["parking again within 3.0 s of a pool fault"])
    ops = [o for o in ops if o.op != "probe"]
    assert "never came back" in " ".join(failed(judge(ops, log))["parking again within 3.0 s of a pool fault"])


def test_a_retrieval_that_connects_the_wrong_caller_is_caught() -> None:
    ops, log = good_run()
    next(o for o in ops if o.op == "retrieve").connected_to = "caller1"
    assert "connected caller1, parked was caller0" in " ".join(
        failed(judge(ops, log))["a retrieval connects the right caller"]
    )


def test_epochs_going_back_and_a_deposed_leader_acting_are_caught() -> None:
    ops, log = good_run()
    old_token = log.created[Keys.LEADER]
    log.delete(Keys.LEADER)
    log.put(Keys.LEADER, {"name": "controller-2"})
    log.put(Keys.owner("pool-a-park"), {"range": "pool-a-park", "pool": "pool-a", "epoch": 2})
    log.put(Keys.EVENTS + "2", {"kind": "failback", "leader": "controller-1", "token": old_token})
    bad = failed(judge(ops, log))
    assert "epoch 2 -> 2" in " ".join(bad["epochs never go backwards"])
    assert "controller-1 wrote failback" in " ".join(bad["at most one controller leader acting"])


def test_a_fault_that_did_not_happen_and_bug_lines_are_caught(tmp_path: Path) -> None:
    ops, log = good_run()
    next(o for o in ops if o.op == "fault").ok = False
    (tmp_path / "node.log").write_text("INFO fine\nERROR BUG: two holders for orbit 7000\n")
    bad = failed(judge(ops, log, (tmp_path / "node.log",)))
    assert "every fault happened and was healed" in bad
    assert "BUG: two holders" in " ".join(bad['no "BUG" log lines'])


def test_history_round_trips_through_its_file(tmp_path: Path) -> None:
    history = History(tmp_path / "history.jsonl")
    op = history.begin("pair-0", "park", caller="caller0")
    history.finish(op, True, orbit="7000", park_id="p1", data={"retrieve_uri": "sip:7000@h;park-id=p1"})
    history.add(Op("nemesis", "fault", 1.0, 2.0, False, fault="kill-node", detail="x"))
    loaded = History.load(tmp_path / "history.jsonl")
    assert [(o.op, o.ok, o.orbit, o.fault) for o in loaded] == [
        ("park", True, "7000", ""),
        ("fault", False, "", "kill-node"),
    ]
    assert loaded[0].data["retrieve_uri"].endswith("park-id=p1")


def parked_by(log: EtcdLog, orbit: str, park_id: str, node: str, incarnation: str) -> None:
    """A parked record as nodes write it now: no lease; the holder names pool/node and its process."""
    pool, _, name = node.partition("/")
    holder = {"node": name, "pool": pool, "incarnation": incarnation, "worker": 0}
    rec = {"orbit": orbit, "park_id": park_id, "caller_uri": "sip:caller5@127.0.0.1", "holder": holder}
    log.put(Keys.parked(orbit), rec, lease=0)


def test_a_restarted_node_taking_its_call_back_is_not_a_stale_writer() -> None:
    ops, log = good_run()
    # pool-a/n2 killed; pool-a/n1 took the call over, then paused past its lease; the
    # restarted pool-a/n2 (a new process) took it back: legitimate, every write without a lease
    parked_by(log, "7005", "p5", "pool-a/n2", "aaaa")
    parked_by(log, "7005", "p5", "pool-a/n1", "bbbb")
    parked_by(log, "7005", "p5", "pool-a/n2", "cccc")
    log.end("7005", "p5", "retrieved")
    assert "one node serves an orbit (fencing)" not in failed(judge(ops, log))


def test_a_stale_incarnation_writing_after_takeover_is_caught() -> None:
    ops, log = good_run()
    parked_by(log, "7005", "p5", "pool-a/n2", "aaaa")
    parked_by(log, "7005", "p5", "pool-a/n1", "bbbb")
    parked_by(log, "7005", "p5", "pool-a/n2", "aaaa")  # the paused old process of pool-a/n2 writes again
    log.end("7005", "p5", "retrieved")
    bad = failed(judge(ops, log))["one node serves an orbit (fencing)"]
    assert any("written again by pool-a/n2#aaaa" in v and "after pool-a/n1#bbbb" in v for v in bad), bad


def test_errors_no_fault_explains_are_caught() -> None:
    ops, log = good_run()
    assert "every error is explained by a fault" not in failed(judge(ops, log))  # pair-2's error: during the fault
    ops.append(Op("pair-0", "error", 30.0, detail="ValueError: no orbit in the MESSAGE"))  # long after every heal
    ops.append(Op("runner", "error", 31.0, detail="workload did not stop in time"))
    bad = " ".join(failed(judge(ops, log))["every error is explained by a fault"])
    assert "pair-0 at 30.0: ValueError" in bad and "workload did not stop in time" in bad
    assert "pair-2" not in bad
