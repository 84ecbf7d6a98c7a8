"""The parked-call lifecycle under unknown outcomes, lost races, restarts and drains.

The node's parts run in this process on the real etcd of the session; faults are injected by
:class:`~tests.node.faults.FaultKV` (a write that times out before or after applying, reads
that fail). Each test is the review finding it is named after.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from callpark.model.settings import DEFAULTS
from callpark.node import calls as held_calls
from callpark.node.membership import Membership
from callpark.node.ringback import Ringback
from callpark.node.takeover import Takeovers
from callpark.node.views import ClusterView
from callpark.node.workers import WorkerHandle
from callpark.store.etcd import EtcdStore
from callpark.store.records import CallState, Outcome
from callpark.store.schema import Keys
from callpark.store.session import LeaseTimings
from tests.node.faults import FaultKV, puts
from tests.node.test_decisions import POOL, Node, make_node, park_msg, retrieve_msg


class Sent:
    """A worker channel that records what the node sends."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def send(self, op: str, **fields: Any) -> None:
        self.messages.append((op, fields))

    def ops(self, op: str) -> list[dict[str, Any]]:
        return [f for o, f in self.messages if o == op]


def listen(handle: WorkerHandle) -> Sent:
    sent = Sent()
    handle.channel = cast(Any, sent)
    return sent


@pytest.fixture
def kv(etcd: EtcdStore) -> FaultKV:
    return FaultKV(etcd)


@pytest.fixture
def node(tmp_path: Path, kv: FaultKV) -> Node:
    return make_node(tmp_path, kv)


def member_revisions(kv: FaultKV) -> dict[str, int]:
    """The live members' ``pool/node`` and member key revisions, as the takeover scan reads them."""
    return {k[len(Keys.MEMBERS) :]: e.mod_revision for k, e in kv.get_prefix(Keys.MEMBERS).entries.items()}


def parked(node: Node, orbit: str) -> dict[str, Any] | None:
    entry = node.kv.inner.get(Keys.parked(orbit)) if isinstance(node.kv, FaultKV) else None
    return None if entry is None else dict(json.loads(entry.value))


def park(node: Node, **extra: Any) -> str:
    reply = node.decisions.park(node.w0, park_msg(**extra))
    assert reply.action == "answer", reply
    return str(reply.fields["orbit"])


# -- 1. readiness is re-published from what etcd holds ----------------------------------------------


def test_readiness_is_republished_when_a_timed_out_write_had_applied(kv: FaultKV) -> None:
    member = Membership(kv, pool=POOL, node="m1", timings=LeaseTimings())
    member.join({"ready": True})

    def ready_in_etcd() -> bool:
        entry = kv.inner.get(member.key)
        assert entry is not None and entry.lease == member.lease
        return bool(json.loads(entry.value)["ready"])

    member.update(ready=True)
    kv.time_out(puts(member.key, b'"ready":false'), applied=True)
    member.update(ready=False)  # an etcd blip: the write times out, having applied
    assert not ready_in_etcd()
    member.update(ready=True)  # quorum is back and so is the node
    assert ready_in_etcd()


# -- 3. a ringback after a lost race -------------------------------------------------------------------


def test_a_ringback_that_lost_a_race_rereads_the_record_and_rings(node: Node) -> None:
    orbit = park(node)
    sent = listen(node.w0)
    ringback = Ringback(node.calls.ctx, node.calls, node.workers, settings=lambda: DEFAULTS)
    node.calls.mutate(orbit, lambda c: replace(c, deadline=time.time() - 1))
    held = node.calls.held[orbit]
    node.decisions.table.update(held, held.call)  # a write whose answer this node missed
    ringback.fire_deadlines()  # loses the race on its stale revision
    ringback.fire_deadlines()
    assert [m["orbit"] for m in sent.ops("ringback")] == [orbit]
    assert (parked(node, orbit) or {})["state"] == "ringing"


# -- 4. dialog updates owed until etcd has them --------------------------------------------------------


def test_an_answered_dialog_lost_to_an_etcd_blip_is_written_once_etcd_answers(node: Node, kv: FaultKV) -> None:
    orbit = park(node)
    kv.down = True
    node.calls.mutate(orbit, lambda c: replace(c, dialog=replace(c.dialog, local_tag="ltag")))
    kv.down = False
    assert (parked(node, orbit) or {})["dialog"]["local_tag"] == ""
    node.calls.retry()
    assert (parked(node, orbit) or {})["dialog"]["local_tag"] == "ltag"
    assert not node.calls.owed


def test_an_owed_update_is_dropped_once_another_node_took_the_call(tmp_path: Path, kv: FaultKV) -> None:
    node = make_node(tmp_path / "n1", kv)
    orbit = park(node)
    kv.down = True
    node.calls.mutate(orbit, lambda c: replace(c, dialog=replace(c.dialog, local_tag="stale")))
    kv.down = False
    other = make_node(tmp_path / "n2", kv, name="n2")
    current = other.decisions.table.get(orbit)
    assert current is not None
    other.decisions.table.take_over(current, replace(current.call.holder, node="n2"))
    node.calls.retry()
    record = parked(node, orbit) or {}
    assert record["holder"]["node"] == "n2" and record["dialog"]["local_tag"] == ""
    assert not node.calls.owed and orbit not in node.calls.held


# -- 5. allocation and retrieval claims whose outcome is unknown ---------------------------------------


def test_an_allocation_that_timed_out_having_applied_is_answered(node: Node, kv: FaultKV) -> None:
    kv.time_out(puts(Keys.parked("7000")), applied=True)
    reply = node.decisions.park(node.w0, park_msg())
    assert (reply.action, reply.fields["orbit"]) == ("answer", "7000")
    assert (parked(node, "7000") or {})["park_id"] == reply.fields["park_id"]
    assert node.calls.held["7000"].call.park_id == reply.fields["park_id"]


def test_an_allocation_whose_outcome_stays_unknown_is_refused_and_its_ghost_freed(node: Node, kv: FaultKV) -> None:
    kv.time_out(puts(Keys.parked("7000")), applied=True, then_reads_fail=1)
    reply = node.decisions.park(node.w0, park_msg())
    assert (reply.action, reply.code) == ("reject", 503)
    ghost = parked(node, "7000")
    assert ghost is not None  # etcd has it, no caller is behind it
    node.calls.retry()
    assert parked(node, "7000") is None
    history = node.decisions.table.history(ghost["park_id"])
    assert history is not None and history["outcome"] == Outcome.ABANDONED.value


def test_a_retrieval_claim_that_timed_out_having_applied_connects(node: Node, kv: FaultKV) -> None:
    orbit = park(node)
    kv.time_out(puts(Keys.parked(orbit), b'"state":"retrieving"'), applied=True)
    reply = node.decisions.retrieve(node.w0, retrieve_msg(orbit))
    assert (reply.action, reply.result) == ("connect", "ok")
    assert node.calls.held[orbit].call.state == CallState.RETRIEVING


def test_an_unknown_retrieval_claim_is_rolled_back_so_the_orbit_is_not_busy_forever(node: Node, kv: FaultKV) -> None:
    orbit = park(node)
    kv.time_out(puts(Keys.parked(orbit), b'"state":"retrieving"'), applied=True, then_reads_fail=1)
    first = node.decisions.retrieve(node.w0, retrieve_msg(orbit))
    assert first.action == "reject"
    assert (parked(node, orbit) or {})["state"] == "retrieving"
    node.calls.retry()
    assert (parked(node, orbit) or {})["state"] == "parked"
    again = node.decisions.retrieve(node.w0, retrieve_msg(orbit, call="c3"))
    assert (again.action, again.result) == ("connect", "ok")


# -- 2. recovery after a restart retries until done -----------------------------------------------------


def test_recovery_after_a_restart_retries_until_etcd_answers(tmp_path: Path, kv: FaultKV) -> None:
    before = make_node(tmp_path / "before", kv)
    orbit = park(before)
    before.member.stop(revoke=True)  # the node restarts: same name, new process
    after = make_node(tmp_path / "after", kv)
    sent = listen(after.w0)
    view = cast(ClusterView, after.facts)
    takeovers = Takeovers(after.calls.ctx, calls=after.calls, view=view, workers=after.workers)
    kv.reads_failing = 1
    takeovers.retry()  # etcd does not answer the first read
    takeovers.retry()
    assert [m["orbit"] for m in sent.ops("takeover")] == [orbit]
    assert after.calls.held[orbit].call.holder.node == "n1"


# -- 6. the drain scan moves only parked calls -------------------------------------------------------------


def test_a_live_draining_holder_keeps_calls_ringing_or_without_replaces(tmp_path: Path, kv: FaultKV) -> None:
    holder = make_node(tmp_path / "n2", kv, name="n2")
    ringing = park(holder, call="a")
    no_replaces = park(holder, call="b", supports_replaces=False)
    holder.calls.held[ringing] = holder.decisions.table.claim(holder.calls.held[ringing], CallState.RINGING)
    scanner = make_node(tmp_path / "n1", kv)
    sent = listen(scanner.w0)
    view = cast(ClusterView, scanner.facts)
    takeovers = Takeovers(scanner.calls.ctx, calls=scanner.calls, view=view, workers=scanner.workers)
    for held in scanner.decisions.table.all_parked():
        assert takeovers._take_over_from(held, {"pool-a/n2": True}, member_revisions(kv))
    assert sent.ops("takeover") == []
    assert {o: (parked(scanner, o) or {}).get("holder", {}).get("node") for o in (ringing, no_replaces)} == {
        ringing: "n2",
        no_replaces: "n2",
    }
    assert holder.decisions.table.history(holder.calls.held[no_replaces].call.park_id) is None
    holder.calls.mutate(ringing, lambda c: c.with_state(CallState.PARKED))  # the ringback went unanswered
    fresh = scanner.decisions.table.get(ringing)
    assert fresh is not None and takeovers._take_over_from(fresh, {"pool-a/n2": True}, member_revisions(kv))
    assert [m["orbit"] for m in sent.ops("takeover")] == [ringing]


# -- 7. start times of calls do not leak -----------------------------------------------------------------


def test_start_times_are_dropped_when_the_call_ends_and_bounded(node: Node) -> None:
    orbit = park(node)
    node.decisions.retrieve(node.w0, retrieve_msg(orbit))
    assert node.calls.started  # the park's and the retrieval's INVITEs
    # the REFER failed and the worker bridged: "ended" names the other leg's handle
    node.calls.free(node.calls.held[orbit], Outcome.RETRIEVED, "retrieved")
    assert not node.calls.started
    bound = held_calls.MAX_STARTED
    for i in range(bound + 10):
        node.calls.note_start(0, f"c{i}", "7001", 0.0)
    assert len(node.calls.started) == bound


def test_an_overdue_call_is_not_rung_back_before_its_takeover_completes(tmp_path: Path, kv: FaultKV) -> None:
    before = make_node(tmp_path / "before", kv)
    orbit = park(before)
    before.calls.mutate(orbit, lambda c: replace(c, deadline=time.time() - 1))
    before.member.stop(revoke=True)
    after = make_node(tmp_path / "after", kv)
    sent = listen(after.w0)
    view = cast(ClusterView, after.facts)
    takeovers = Takeovers(after.calls.ctx, calls=after.calls, view=view, workers=after.workers)
    ringback = Ringback(after.calls.ctx, after.calls, after.workers, settings=lambda: DEFAULTS)
    takeovers.retry()
    ringback.fire_deadlines()  # the worker does not hold the call yet: it would answer "not held here"
    assert [o for o, _ in sent.messages] == ["takeover"]
    dialog = sent.ops("takeover")[0]["dialog"]
    takeovers.handle_result(after.w0, {"orbit": orbit, "ok": True, "dialog": {**dialog, "call_id": "new"}})
    ringback.fire_deadlines()
    assert [o for o, _ in sent.messages] == ["takeover", "ringback"]


def test_a_takeover_claim_that_timed_out_having_applied_is_settled_by_the_next_scan(
    tmp_path: Path, kv: FaultKV
) -> None:
    gone = make_node(tmp_path / "n2", kv, name="n2")
    orbit = park(gone)
    gone.member.stop(revoke=True)  # the holder dies
    scanner = make_node(tmp_path / "n1", kv)
    sent = listen(scanner.w0)
    view = cast(ClusterView, scanner.facts)
    takeovers = Takeovers(scanner.calls.ctx, calls=scanner.calls, view=view, workers=scanner.workers)
    record = scanner.decisions.table.get(orbit)
    assert record is not None
    kv.time_out(puts(Keys.parked(orbit), b'"node":"n1"'), applied=True, then_reads_fail=1)
    assert takeovers._take_over_from(record, {}, {})
    assert (parked(scanner, orbit) or {})["holder"]["node"] == "n1"  # ours in etcd, yet no worker has it
    takeovers._settle_unsure(scanner.decisions.table.all_parked())
    assert [m["orbit"] for m in sent.ops("takeover")] == [orbit]
    assert orbit in scanner.calls.held
