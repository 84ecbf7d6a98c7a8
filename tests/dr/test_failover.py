"""Disaster recovery with real processes: pool loss, node loss, pause, controller loss,
planned failover and failback, drain, and a ringback that falls due during a failover."""

from __future__ import annotations

import time
from typing import Any

from callpark.lab.phone import Phone
from callpark.lab.phone.flows import connected_call, hears_music, park_probe, parked_call
from callpark.netutil import LOOPBACK
from callpark.waiting import wait_until
from tests.dr.conftest import DrLab

POOL_B_NODES = ("pool-b-n1", "pool-b-n2")


def retrieve(dr: DrLab, retriever: Phone, orbit: str, caller: Phone) -> None:
    since = retriever.mark()
    handle = retriever.call(f"sip:{orbit}@{LOOPBACK}")
    retriever.wait_state(handle, "CONFIRMED", since=since, timeout=15)
    connected_call(caller, remote_contains=f"{retriever.user}@")


def same_call(before: dict[str, Any], after: dict[str, Any]) -> bool:
    keys = ("orbit", "park_id", "parked_at", "deadline", "attempts", "caller_uri", "parker_uri")
    return all(before[k] == after[k] for k in keys)


def callers_parked(dr: DrLab, parker: Phone, count: int) -> tuple[list[Phone], list[dict[str, Any]]]:
    """``count`` callers (answering by themselves), each parked by ``parker``; and their records."""
    callers = [dr.phone(f"caller{i}", auto_answer=True) for i in range(count)]
    return callers, [dr.park(parker, c) for c in callers]


def test_whole_primary_pool_killed_backup_parks_and_keeps_every_call(dr: DrLab) -> None:
    cluster = dr.start()
    parker, retriever, probe = dr.phone("parker"), dr.phone("carol"), dr.phone("probe")
    callers = [dr.phone(f"caller{i}", auto_answer=True) for i in range(3)]
    before = {c.user: dr.park(parker, c) for c in callers}
    assert {r["holder"]["node"] for r in before.values()} <= {"pool-a-n1", "pool-a-n2"}
    killed_at = time.monotonic()
    for node in cluster.nodes["pool-a"]:
        node.kill9()
    parks_again_at = park_probe(probe, f"sip:park@{LOOPBACK}", 20)
    rto = parks_again_at - killed_at

    def taken_over() -> bool:
        now = dr.parked()
        return all(
            r["orbit"] in now
            and now[r["orbit"]]["holder"]["node"] in POOL_B_NODES
            and now[r["orbit"]]["dialog"]["call_id"] != r["dialog"]["call_id"]  # the INVITE/Replaces succeeded
            for r in before.values()
        )

    wait_until(taken_over, timeout=30, what="pool-b to take over every parked call")
    takeover_s = time.monotonic() - killed_at
    after = dr.parked()
    for record in before.values():
        assert same_call(record, after[record["orbit"]]), "orbit, park id, deadline and ringback count are kept"
    assert dr.owners()["a-park"] == ("pool-b", 2)
    for caller in callers:
        assert hears_music(caller, parked_call(caller, before[caller.user]["orbit"])), caller.user
    for caller in callers:
        retrieve(dr, retriever, before[caller.user]["orbit"], caller)
        retriever.hangup_all()
    # new parks on the primary's ranges succeed on the backup
    dana, erin = dr.phone("dana", auto_answer=True), dr.phone("erin")
    record = dr.park(erin, dana, target="7015")
    assert record["orbit"] == "7015" and record["holder"]["node"] in POOL_B_NODES
    print(f"\nparking works again {rto:.2f}s after the kill; calls taken over after {takeover_s:.2f}s")


def test_node_killed_inside_a_pool_its_sibling_takes_the_calls(dr: DrLab) -> None:
    cluster = dr.start()
    callers, before = callers_parked(dr, dr.phone("parker"), 3)
    victim_name = before[0]["holder"]["node"]
    victim = next(n for n in cluster.nodes["pool-a"] if n.name == victim_name)
    sibling = next(n.name for n in cluster.nodes["pool-a"] if n.name != victim_name)
    victim.kill9()
    mine = [r for r in before if r["holder"]["node"] == victim_name]
    wait_until(
        lambda: all(dr.parked()[r["orbit"]]["holder"]["node"] == sibling for r in mine),
        timeout=20,
        what="the sibling to take over",
    )
    assert dr.owners()["a-park"] == ("pool-a", 1), "a node loss inside a live pool moves no range"
    for r in before:
        assert same_call(r, dr.parked()[r["orbit"]])
    caller = next(c for c in callers if f"sip:{c.user}@" in mine[0]["caller_uri"])
    assert hears_music(caller, parked_call(caller, mine[0]["orbit"]))


def test_paused_node_wakes_up_fenced_and_never_serves_twice(dr: DrLab) -> None:
    cluster = dr.start(a_nodes=2)
    parker, caller, retriever = dr.phone("parker"), dr.phone("alice", auto_answer=True), dr.phone("carol")
    record = dr.park(parker, caller)
    victim = next(n for n in cluster.nodes["pool-a"] if n.name == record["holder"]["node"])
    pids = victim.pause()
    try:
        wait_until(
            lambda: dr.parked()[record["orbit"]]["holder"]["node"] != victim.name,
            timeout=cluster.t.lease_ttl_s + 15,
            what="a sibling to take over from the paused node",
        )
    finally:
        victim.resume(pids)
    taken = dr.parked()[record["orbit"]]
    # the resumed node re-registers and drops the call locally; the record stays the sibling's
    wait_until(lambda: victim.get("/readyz")[0] == 200, timeout=15, what="the resumed node to be ready again")
    wait_until(lambda: victim.metric("callpark_parked_calls") == 0, timeout=10, what="the resumed node to let go")
    assert dr.parked()[record["orbit"]] == taken
    retrieve(dr, retriever, record["orbit"], caller)
    outcome = wait_until(lambda: dr.history(record["park_id"]), timeout=10, what="outcome")
    holder = taken["holder"]
    assert outcome["outcome"] == "retrieved" and outcome["node"] == f"{holder['pool']}/{holder['node']}", outcome
    assert outcome["incarnation"] == holder["incarnation"]


def test_controller_leader_killed_during_a_failover_the_standby_finishes_it(dr: DrLab) -> None:
    cluster = dr.start()
    parker, caller = dr.phone("parker"), dr.phone("alice", auto_answer=True)
    record = dr.park(parker, caller)
    leader = next(c for c in cluster.controllers if c.status().get("leader"))
    standby = next(c for c in cluster.controllers if c is not leader)
    for node in cluster.nodes["pool-a"]:
        node.kill9()
    leader.kill9()
    wait_until(lambda: dr.owners()["a-park"][0] == "pool-b", timeout=30, what="the standby to fail pool-a over")
    assert dr.owners()["a-park"] == ("pool-b", 2), "exactly one move: epochs never skip or go backwards"
    assert standby.status().get("leader")
    wait_until(lambda: dr.parked()[record["orbit"]]["holder"]["node"] in POOL_B_NODES, timeout=20, what="takeover")
    assert hears_music(caller, parked_call(caller, record["orbit"]))


def test_planned_failover_and_failback_with_calls_parked(dr: DrLab) -> None:
    from tests.conftest import Cli

    cluster = dr.start()
    cli = Cli(cluster.endpoints)
    parker, retriever = dr.phone("parker"), dr.phone("carol")
    alice, bob = dr.phone("alice", auto_answer=True), dr.phone("bob", auto_answer=True)
    on_a = dr.park(parker, alice)
    out = cli.ok("dr", "failover", "--pool", "pool-a")
    assert "planned-failover: a-park now served by pool-b" in out
    assert dr.owners()["a-park"] == ("pool-b", 2)
    on_b = dr.park(parker, bob)  # the park URI still reaches pool-a, which sends it to the owner
    assert on_b["holder"]["node"] in POOL_B_NODES
    status = cli.ok("dr", "status")
    assert "planned-failover" in status and "pool-b" in status
    out = cli.ok("dr", "failback", "--pool", "pool-a")
    assert "failback: a-park now served by pool-a" in out
    assert dr.owners()["a-park"] == ("pool-a", 3)
    # calls keep their holder across the failback and stay retrievable
    assert dr.parked()[on_b["orbit"]]["holder"]["node"] == on_b["holder"]["node"]
    retrieve(dr, retriever, on_b["orbit"], bob)
    retriever.hangup_all()
    retrieve(dr, retriever, on_a["orbit"], alice)
    refused = cli("dr", "failover", "--pool", "pool-b")
    assert refused.code == 0 or "[dr-refused]" in refused.err


def test_drain_moves_a_nodes_calls_to_its_peer_live(dr: DrLab) -> None:
    from tests.conftest import Cli

    cluster = dr.start()
    callers, records = callers_parked(dr, dr.phone("parker"), 2)
    node = records[0]["holder"]["node"]
    out = Cli(cluster.endpoints).ok("dr", "drain", "--node", f"pool-a/{node}")
    assert "drained" in out
    moved = [r for r in records if r["holder"]["node"] == node]
    now = dr.parked()
    for r in moved:
        assert now[r["orbit"]]["holder"]["node"] != node and same_call(r, now[r["orbit"]])
        # drained means the caller's dialog really moved (INVITE/Replaces done), not just claimed
        assert now[r["orbit"]]["dialog"]["call_id"] != r["dialog"]["call_id"]
    caller = next(c for c in callers if f"sip:{c.user}@" in moved[0]["caller_uri"])
    assert hears_music(caller, parked_call(caller, moved[0]["orbit"]))
    victim = next(n for n in cluster.nodes["pool-a"] if n.name == node)
    assert victim.get("/readyz")[0] == 503


def test_a_ringback_due_during_failover_rings_the_parker_exactly_once(dr: DrLab) -> None:
    cluster = dr.start(timeout="00:00:10", ring_time_s=4)
    parker, alice = dr.phone("parker"), dr.phone("alice", auto_answer=True)
    record = dr.park(parker, alice)
    since = parker.mark()
    for node in cluster.nodes["pool-a"]:
        node.kill9()
    wait_until(
        lambda: dr.parked().get(record["orbit"], {}).get("holder", {}).get("node") in POOL_B_NODES,
        timeout=20,
        what="takeover",
    )
    first = parker.wait_event(lambda e: e["event"] == "incoming", since=since, timeout=25, what="the ringback")
    parker.answer(first["call"])
    connected_call(alice, remote_contains="parker@", timeout=15)
    outcome = wait_until(lambda: dr.history(record["park_id"]), timeout=15, what="outcome")
    assert outcome["outcome"] == "rang-back"
    assert len([e for e in parker.events("incoming", since=since)]) == 1
