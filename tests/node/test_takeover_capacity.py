"""A restarted node takes back more calls than one worker can hold: the takeovers are spread
over its workers and none is lost (real etcd, a real node process, real phones).

A regression test end to end: the old code passed it too, because each takeover's etcd write
gave the worker time to report its slots; the deterministic proof of the reservation is in
tests/node/test_takeover_rules.py."""

from __future__ import annotations

from callpark.lab.phone.flows import blind_park
from callpark.store.schema import Keys
from callpark.waiting import wait_until
from tests.node.conftest import POOL, ParkLab


def test_a_restarted_node_spreads_its_orphans_over_its_workers_and_loses_none(lab: ParkLab) -> None:
    lab.configure(timeout="00:02:00")  # no ringback during the test
    node = lab.node(workers=2)
    parker = lab.phone("parker")
    callers = [lab.phone(f"caller{i}", auto_answer=True) for i in range(5)]
    for i, caller in enumerate(callers):
        blind_park(parker, caller, node.park_uri(0 if i < 3 else 1))  # 3 + 2: each worker keeps a spare
    before = {r["orbit"]: r for r in (lab.wait_parked(f"caller{i}") for i in range(5))}
    node.kill9()  # the host crashes; its workers leave without BYE
    lab.nodes.remove(node)
    wait_until(lambda: lab.store.get(Keys.member(POOL, "n1")) is None, timeout=15, what="the old lease to expire")
    again = lab.node(workers=2)  # 5 orphans: more than one worker's 3 free slots

    def taken_back() -> bool:
        records = lab.parked()
        new_ids = {o: r["dialog"]["call_id"] for o, r in records.items()}
        return all(new_ids.get(o, r["dialog"]["call_id"]) != r["dialog"]["call_id"] for o, r in before.items())

    wait_until(taken_back, timeout=30, what=f"every call taken back; etcd: {lab.parked()}")
    after = lab.parked()
    assert all(lab.history(r["park_id"]) is None for r in before.values())  # none lost
    per_worker = [sum(1 for r in after.values() if r["holder"]["worker"] == w) for w in (0, 1)]
    assert sorted(per_worker) == [2, 3], per_worker
    assert again.metric("callpark_takeovers_total", result="ok") == 5
