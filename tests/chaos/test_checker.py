"""The checker catches a deliberately broken build: histories with a double-served orbit,
a lost call, a late failover, two acting leaders, a wrong caller, faults that did not
happen, and each defect of issue #12 (bare-name adoption, a ghost allocation, a stuck
retrieval claim, a missed ringback, a zombie takeover, a lost dialog change, a takeover
past a worker's capacity, a mid-ringback call taken from a draining node, a call lost to a
node that rejoined) and a caller connected again after hanging up. Each broken history
differs from a passing one in exactly the defect.

Records are built with the store's own encoders (:mod:`callpark.store.records`), as nodes
write them: ``parked/`` records without a lease, holders naming ``pool``, ``node`` and the
``incarnation``; member keys bound to their node's lease and carrying the same incarnation.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from callpark.chaos import checker
from callpark.chaos.history import History, Op
from callpark.store.etcd import Change
from callpark.store.kv import Entry
from callpark.store.records import (
    CallState,
    Dialog,
    Holder,
    Outcome,
    ParkedCall,
    ParkKind,
    history_bytes,
    member_bytes,
)
from callpark.store.schema import Keys

LEASES = {"pool-a/n1": 0x10, "pool-a/n2": 0x11, "pool-b/n1": 0x20, "pool-b/n2": 0x21}


class EtcdLog:
    """Builds the etcd history a run would replay, one revision per write."""

    def __init__(self) -> None:
        self.rev = 1
        self.changes: list[Change] = []
        self.created: dict[str, int] = {}
        self.calls: dict[str, ParkedCall] = {}  # park id -> its last record

    def put_raw(self, key: str, raw: bytes, lease: int = 0) -> int:
        self.rev += 1
        create = self.created.setdefault(key, self.rev)
        self.changes.append(Change("put", Entry(key, raw, create, self.rev, 1, lease)))
        return self.rev

    def put(self, key: str, value: dict[str, Any], lease: int = 0) -> int:
        return self.put_raw(key, json.dumps(value).encode(), lease)

    def delete(self, key: str) -> None:
        self.rev += 1
        self.created.pop(key, None)
        self.changes.append(Change("delete", Entry(key, b"", 0, self.rev, 0)))

    def member(self, node: str, incarnation: str, *, draining: bool = False, ready: bool = True) -> None:
        """``node`` (``pool/name``) publishes its member key, bound to its lease."""
        pool, _, name = node.partition("/")
        info = {"incarnation": incarnation, "ready": ready, "draining": draining, "workers": []}
        self.put_raw(Keys.member(pool, name), member_bytes(pool, name, info), LEASES[node])

    def member_gone(self, node: str) -> None:
        """``node``'s lease expired: etcd deletes its member key."""
        pool, _, name = node.partition("/")
        self.delete(Keys.member(pool, name))

    def park(self, orbit: str, park_id: str, caller: str, node: str, incarnation: str, worker: int = 0) -> None:
        pool, _, name = node.partition("/")
        uri = f"sip:{caller}@127.0.0.1"
        call = ParkedCall(
            orbit=orbit,
            park_id=park_id,
            pool=pool,
            range=f"{pool}-park",
            kind=ParkKind.BLIND,
            state=CallState.PARKED,
            holder=Holder(name, worker, "127.0.10.1:5070", pool, incarnation),
            dialog=Dialog(f"cid-{park_id}", "tag-0", "rtag", uri, uri, True),
            caller_uri=uri,
            parker_uri="sip:parker@127.0.0.1",
            parked_at=1.0,
            deadline=11.0,
            attempts=0,
            write_id=f"w{self.rev}",
        )
        self.write(call)

    def write(self, call: ParkedCall) -> None:
        call = replace(call, write_id=f"w{self.rev + 1}")
        self.calls[call.park_id] = call
        self.put_raw(Keys.parked(call.orbit), call.to_bytes())  # parked/ records carry no lease

    def change(self, park_id: str, **fields: Any) -> None:
        """The call's holder writes it again with ``fields`` changed (state, dialog, ...)."""
        self.write(replace(self.calls[park_id], **fields))

    def move(self, park_id: str, node: str, incarnation: str, worker: int = 0) -> None:
        """A take-over claim: ``node`` (``pool/name``) writes itself as the call's holder."""
        pool, _, name = node.partition("/")
        holder = Holder(name, worker, "127.0.11.1:5070", pool, incarnation)
        self.change(park_id, holder=holder, state=CallState.PARKED)

    def end(self, park_id: str, outcome: str, detail: str = "", ended_at: float = 12.0) -> None:
        call = self.calls[park_id]
        self.delete(Keys.parked(call.orbit))
        raw = history_bytes(call, Outcome(outcome), detail, ended_at, call.holder.node_id)
        self.put_raw(Keys.history(park_id), raw)


def good_run() -> tuple[list[Op], EtcdLog]:
    """Two calls parked on pool-a/n1 (pool-b has an n1 too); a pool fault (kill-pool) with a 1.2 s
    RTO: pool-a/n1's lease expires, pool-b/n1 takes both calls over; one retrieved, one rang back;
    pool-a/n1 restarts as a new incarnation; one leader. Before all that, a call parked on
    pool-b/n1 ends when its caller hangs up."""
    log = EtcdLog()
    log.put(Keys.LEADER, {"name": "controller-1"})
    token = log.created[Keys.LEADER]
    log.put(Keys.owner("pool-a-park"), {"range": "pool-a-park", "pool": "pool-a", "epoch": 1})
    log.member("pool-a/n1", "a1")
    log.member("pool-b/n1", "b1")
    log.park("7100", "p0", "caller3", "pool-b/n1", "b1")
    log.end("p0", "abandoned", "caller-hangup", ended_at=0.85)  # its caller hung up
    log.park("7000", "p1", "caller0", "pool-a/n1", "a1")
    log.park("7001", "p2", "caller1", "pool-a/n1", "a1")
    log.change("p1", dialog=replace(log.calls["p1"].dialog, local_tag="tag-a1"))  # answered: its dialog
    log.member_gone("pool-a/n1")  # killed: its lease expired
    log.put(Keys.owner("pool-a-park"), {"range": "pool-a-park", "pool": "pool-b", "epoch": 2})
    log.put(Keys.EVENTS + "1", {"kind": "failover", "leader": "controller-1", "token": token})
    log.move("p1", "pool-b/n1", "b1")  # taken over by the backup
    log.change("p1", dialog=replace(log.calls["p1"].dialog, local_tag="tag-b1"))  # the takeover's new dialog
    log.move("p2", "pool-b/n1", "b1", worker=1)
    log.change("p2", dialog=replace(log.calls["p2"].dialog, local_tag="tag-b1w1"))
    log.member("pool-a/n1", "a2")  # restarted: a new process
    log.change("p1", state=CallState.RETRIEVING)
    log.end("p1", "retrieved")
    log.change("p2", state=CallState.RINGING)
    log.end("p2", "rang-back")
    ops = [
        Op("pair-0", "park", 1.0, 1.1, True, orbit="7000", caller="caller0", park_id="p1"),
        Op("pair-1", "park", 1.0, 1.1, True, orbit="7001", caller="caller1", park_id="p2"),
        Op("nemesis", "fault", 2.0, 8.0, True, fault="kill-pool", data={"pool_fault": True}),
        Op("probe", "probe", 2.0, 3.2, True, fault="kill-pool", data={"fault_start": 2.0, "rto_s": 1.2}),
        Op("nemesis", "heal", 8.0, 9.0, True, fault="kill-pool", data={"fault_start": 2.0}),
        Op("pair-2", "error", 5.0, detail="TimeoutError: no 200 to the park"),  # the pool was down
        Op("pair-2", "park", 4.0, 6.0, False, caller="caller2", detail="503 Park state unavailable"),  # idem
        Op("pair-0", "retrieve", 9.0, 9.2, True, orbit="7000", caller="caller0", park_id="p1", connected_to="caller0"),
        Op("pair-1", "timeout", 1.1, 12.0, True, orbit="7001", caller="caller1", park_id="p2", connected_to="caller1"),
        Op("pair-3", "park", 0.5, 0.6, True, orbit="7100", caller="caller3", park_id="p0"),
        Op("pair-3", "abandon", 0.8, 0.81, True, orbit="7100", caller="caller3", park_id="p0"),
    ]
    return ops, log


def judge(ops: list[Op], log: EtcdLog, logs: tuple[Path, ...] = ()) -> dict[str, checker.Verdict]:
    report = checker.check(ops, log.changes, logs=logs, rto_bound_s=3.0, replaces_capable=["caller0", "caller1"])
    return {v.invariant: v for v in report.verdicts}


def failed(verdicts: dict[str, checker.Verdict]) -> dict[str, list[str]]:
    return {name: v.violations for name, v in verdicts.items() if not v.ok}


def only(bad: dict[str, list[str]]) -> list[str]:
    """The violations of the one invariant that failed."""
    assert len(bad) == 1, bad
    return next(iter(bad.values()))


def test_a_clean_history_passes_every_invariant() -> None:
    ops, log = good_run()
    verdicts = judge(ops, log)
    assert failed(verdicts) == {}
    assert all(v.checked > 0 for name, v in verdicts.items() if "BUG" not in name)
    report = checker.check(ops, log.changes, rto_bound_s=3.0)
    assert report.numbers["worst_rto_s"] == 1.2 and report.numbers["calls_lost"] == 0


def test_double_served_orbit_is_caught() -> None:
    ops, log = good_run()
    log.park("7001", "p3", "caller2", "pool-b/n2", "b2")  # a second call written onto an orbit still held by p2
    log.changes.insert(-4, log.changes.pop())  # ... before p2 ended
    bad = failed(judge(ops, log))
    assert "orbit 7001 held by p2 and p3" in " ".join(bad["orbit held by one call at a time"])


def test_a_stale_node_writing_after_takeover_is_caught() -> None:
    ops, log = good_run()
    # pool-a/n1's first process writes p1 again after pool-b/n1 took it over: a fencing failure
    stale = next(c for c in log.changes if c.entry.key == Keys.parked("7000"))
    assert json.loads(stale.entry.value)["holder"] == {
        "node": "n1", "pool": "pool-a", "incarnation": "a1", "worker": 0, "sip": "127.0.10.1:5070"
    }  # fmt: skip
    retrieving = next(i for i, c in enumerate(log.changes) if b'"retrieving"' in c.entry.value)
    log.changes.insert(retrieving, Change("put", stale.entry))
    bad = failed(judge(ops, log))
    assert any(
        "written again by pool-a/n1#a1" in v and "after pool-b/n1#b1" in v
        for v in bad["one node serves an orbit (fencing)"]
    )


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


def test_a_caller_connected_again_after_hanging_up_is_caught() -> None:
    """The takeover of a call whose caller hung up while its holder was dead must not bring the
    caller back (pjsip accepts a Replaces while its BYE is unanswered): the park then ended
    "rang-back" long after the workload had hung the caller up."""
    ops, log = good_run()
    ops = [o for o in ops if not (o.op == "timeout" and o.park_id == "p2")]
    abandon = Op("pair-1", "abandon", 5.0, 5.1, True, orbit="7001", caller="caller1", park_id="p2")
    bad = only(failed(judge([*ops, abandon], log)))
    assert "caller1 hung up at 5.1, yet park p2 (orbit 7001) ended rang-back at 12.0" in " ".join(bad)
    racing = replace(abandon, start=10.5, end=10.6)  # the handover raced the hang-up
    assert failed(judge([*ops, racing], log)) == {}
    log.changes = [c for c in log.changes if not c.entry.key.endswith("history/p2")]
    log.put(Keys.HISTORY + "p2", {"park_id": "p2", "orbit": "7001", "outcome": "abandoned", "ended_at": 12.0})
    assert failed(judge([*ops, abandon], log)) == {}


def test_a_call_that_never_ends_and_an_unrecorded_ack_are_caught() -> None:
    ops, log = good_run()
    log.park("7002", "p4", "caller2", "pool-b/n1", "b1")
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


def test_a_restarted_node_taking_its_call_back_is_not_a_stale_writer() -> None:
    ops, log = good_run()
    # pool-a/n2 killed; pool-a/n1 took the call over, then paused past its lease; the
    # restarted pool-a/n2 (a new process) took it back: legitimate, every write without a lease
    log.park("7005", "p5", "caller5", "pool-a/n2", "aaaa")
    log.move("p5", "pool-a/n1", "bbbb")
    log.move("p5", "pool-a/n2", "cccc")
    log.end("p5", "retrieved")
    assert failed(judge(ops, log)) == {}


def test_a_stale_incarnation_writing_after_takeover_is_caught() -> None:
    ops, log = good_run()
    log.park("7005", "p5", "caller5", "pool-a/n2", "aaaa")
    log.move("p5", "pool-a/n1", "bbbb")
    log.move("p5", "pool-a/n2", "aaaa")  # the paused old process of pool-a/n2 writes again
    log.end("p5", "retrieved")
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


# -- issue #12's findings, each planted in an otherwise clean run ------------------------------


def test_bare_name_adoption_by_a_namesake_in_another_pool_is_caught() -> None:
    """Finding 1: pool-b/n1 restarts and adopts the calls of pool-a/n1, alive, as its own."""
    ops, log = good_run()
    log.member("pool-b/n1", "b2")  # pool-b/n1 restarted
    log.park("7005", "p5", "caller5", "pool-a/n2", "an2")
    log.member("pool-a/n2", "an2")
    log.move("p5", "pool-b/n2", "bn2")  # pool-b/n2 recovers "its own" calls by bare name n2
    log.end("p5", "abandoned")
    bad = failed(judge(ops, log))
    assert list(bad) == ["a call moves only from a gone or draining holder"], bad
    assert "park p5 (orbit 7005) moved from pool-a/n2#an2 to pool-b/n2#bn2" in only(bad)[0]
    assert "alive and not draining" in only(bad)[0]


def test_a_ghost_allocation_is_caught() -> None:
    """Finding 2: the allocation timed out having applied; the node answered 503 and never freed it."""
    ops, log = good_run()
    log.park("7006", "p6", "caller2", "pool-b/n1", "b1")
    ops.append(Op("pair-2", "park", 20.0, 21.0, False, caller="caller2", detail="not answered: 503"))
    bad = failed(judge(ops, log))
    assert "park p6 (orbit 7006" in " ".join(bad["every parked call ends in exactly one outcome"])
    assert "park of orbit ? at 20.0-21.0 failed" in " ".join(bad["every failed operation is explained by a fault"])


def test_a_stuck_retrieval_claim_making_later_retrievals_busy_is_caught() -> None:
    """Finding 2: a claim whose outcome was unknown left the call RETRIEVING in etcd; every later
    retrieval is answered 486 "Orbit busy" although no fault is going on."""
    ops, log = good_run()
    log.park("7007", "p7", "caller2", "pool-b/n1", "b1")
    log.change("p7", state=CallState.RETRIEVING)  # applied; the node never heard back
    ops += [
        Op("pair-2", "park", 20.0, 20.2, True, orbit="7007", caller="caller2", park_id="p7"),
        Op("pair-2", "retrieve", 21.0, 21.1, False, orbit="7007", caller="caller2", park_id="p7", detail="486"),
        Op("pair-2", "retrieve", 40.0, 40.1, False, orbit="7007", caller="caller2", park_id="p7", detail="486"),
        Op("pair-2", "abandon", 41.0, 41.1, True, orbit="7007", caller="caller2", park_id="p7"),
    ]
    log.end("p7", "abandoned", ended_at=41.2)
    bad = failed(judge(ops, log))
    assert list(bad) == ["every failed operation is explained by a fault"], bad
    assert "retrieve of orbit 7007 at 40.0-40.1 failed: 486" in " ".join(only(bad))


def test_a_missed_ringback_is_caught() -> None:
    """Finding 2: a lost race on the ringback claim never refreshed the cache: no ringback fires."""
    ops, log = good_run()
    log.park("7008", "p8", "caller2", "pool-b/n1", "b1")
    ops += [
        Op("pair-2", "park", 20.0, 20.2, True, orbit="7008", caller="caller2", park_id="p8"),
        Op("pair-2", "timeout", 20.2, 54.0, False, orbit="7008", caller="caller2", park_id="p8",
           detail="WaitTimeout: timed out after 34.0s waiting for ringback to parker2"),
        Op("pair-2", "abandon", 54.0, 54.1, True, orbit="7008", caller="caller2", park_id="p8"),
    ]  # fmt: skip
    log.end("p8", "abandoned", ended_at=54.2)
    bad = failed(judge(ops, log))
    assert list(bad) == ["every failed operation is explained by a fault"], bad
    assert "timeout of orbit 7008" in only(bad)[0]


def test_a_zombie_takeover_is_caught() -> None:
    """Finding 2: the take-over claim applied (outcome unknown to the node) but no INVITE/Replaces
    went out: the call sits with the new holder, unreachable, and never ends."""
    ops, log = good_run()
    log.member("pool-a/n2", "an2")
    log.park("7009", "p9", "caller2", "pool-a/n2", "an2")
    log.member_gone("pool-a/n2")
    log.move("p9", "pool-b/n2", "bn2")  # and nothing after it
    ops += [
        Op("pair-2", "park", 20.0, 20.2, True, orbit="7009", caller="caller2", park_id="p9"),
        Op("pair-2", "retrieve", 40.0, 60.0, False, orbit="7009", caller="caller2", park_id="p9",
           detail="WaitTimeout: retrieval answered"),
    ]  # fmt: skip
    bad = failed(judge(ops, log))
    assert "park p9 (orbit 7009" in " ".join(bad["every parked call ends in exactly one outcome"])
    assert "retrieve of orbit 7009" in " ".join(bad["every failed operation is explained by a fault"])


def test_a_lost_dialog_change_leading_to_481_is_caught() -> None:
    """Finding 3: the answered dialog (its local tag) was never written; a later takeover sends
    INVITE/Replaces with the stale tag, gets 481 and records the caller lost."""
    ops, log = good_run()
    log.member("pool-a/n2", "an2")
    log.park("7010", "p10", "caller0", "pool-a/n2", "an2")  # dialog still "tag-0": the update was lost
    log.member_gone("pool-a/n2")
    log.move("p10", "pool-b/n2", "bn2")
    log.end("p10", "lost", "takeover answered 481 Call/Transaction Does Not Exist")
    ops.append(Op("pair-0", "park", 20.0, 20.2, True, orbit="7010", caller="caller0", park_id="p10"))
    bad = failed(judge(ops, log))
    assert list(bad) == ["no call of a Replaces-capable caller lost"], bad
    assert "park p10 (orbit 7010) of sip:caller0@127.0.0.1 lost: takeover answered 481" in only(bad)[0]


def test_a_takeover_beyond_a_workers_capacity_is_caught() -> None:
    """Finding 4: after a node restart its orphans all went to one worker, past its 4 calls."""
    ops, log = good_run()
    log.member("pool-a/n2", "an2")
    for i in range(5):
        log.park(f"702{i}", f"q{i}", "caller2", "pool-a/n2", "an2", worker=i % 2)
    log.member_gone("pool-a/n2")
    for i in range(5):
        log.move(f"q{i}", "pool-b/n2", "bn2", worker=0)
    for i in range(5):
        log.end(f"q{i}", "abandoned")
    bad = failed(judge(ops, log))
    assert list(bad) == ["no worker holds more than 4 calls"], bad
    assert "pool-b/n2#bn2/worker0 holds 5 parked calls" in only(bad)[0]


def test_a_ringing_call_taken_from_a_draining_node_is_caught() -> None:
    """Finding 6: the scan took a RINGING call from a live draining node, mid-ringback."""
    ops, log = good_run()
    log.member("pool-a/n2", "an2")
    log.park("7011", "p11", "caller2", "pool-a/n2", "an2")
    log.park("7012", "p12", "caller2", "pool-a/n2", "an2")
    log.change("p11", state=CallState.RINGING)
    log.member("pool-a/n2", "an2", draining=True)
    log.move("p12", "pool-a/n1", "a2")  # PARKED from a draining node: allowed
    log.move("p11", "pool-a/n1", "a2")  # RINGING: not allowed
    log.end("p11", "rang-back")
    log.end("p12", "retrieved")
    bad = failed(judge(ops, log))
    assert list(bad) == ["a call moves only from a gone or draining holder"], bad
    assert only(bad) == [
        "park p11 (orbit 7011) moved from pool-a/n2#an2 to pool-a/n1#a2 at revision "
        f"{log.rev - 4}: taken ringing from a draining node"
    ]


def test_a_call_lost_to_a_node_that_rejoined_is_caught() -> None:
    """Finding 6: the scan read pool-a/n2 as gone, pool-a/n2 rejoined (same process, new lease)
    and parked a fresh call, and the take-over claim did not compare its member key."""
    ops, log = good_run()
    log.member("pool-a/n2", "an2")
    log.member_gone("pool-a/n2")  # a blip: its lease expired
    log.member("pool-a/n2", "an2")  # ... and it rejoined
    log.park("7013", "p13", "caller1", "pool-a/n2", "an2")
    log.move("p13", "pool-b/n2", "bn2")
    log.end("p13", "lost", "takeover answered 481")
    ops.append(Op("pair-1", "park", 20.0, 20.2, True, orbit="7013", caller="caller1", park_id="p13"))
    bad = failed(judge(ops, log))
    assert set(bad) == {"a call moves only from a gone or draining holder", "no call of a Replaces-capable caller lost"}
    assert "alive and not draining" in bad["a call moves only from a gone or draining holder"][0]


def test_failures_during_a_fault_are_explained() -> None:
    """A retrieval that failed while a fault was on (or until its grace after the heal) is the fault's."""
    ops, log = good_run()
    ops.append(Op("pair-0", "retrieve", 7.0, 8.5, False, orbit="7000", caller="caller0", detail="503"))
    ops.append(Op("pair-0", "retrieve", 1.0, 2.5, False, orbit="7000", caller="caller0", detail="overlaps"))
    assert failed(judge(ops, log)) == {}
    late = Op("pair-0", "retrieve", 16.0, 16.5, False, orbit="7000", caller="caller0", detail="486")
    assert "every failed operation is explained by a fault" in failed(judge([*ops, late], log))
    report = checker.check([*ops, late], log.changes, rto_bound_s=3.0, grace_s=10.0)
    assert report.ok, report.to_json()
