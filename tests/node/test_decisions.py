"""Park and retrieve decisions on the in-memory store: request and node state in, reply out (no SIP)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from callpark.model.orbits import OrbitRange
from callpark.model.settings import DEFAULTS, CpsSettings
from callpark.node.calls import HeldCalls
from callpark.node.config import NodeConfig
from callpark.node.context import NodeContext
from callpark.node.decisions import PARKS, RETRIEVALS, Decisions
from callpark.node.membership import Membership
from callpark.node.metrics import NodeMetrics
from callpark.node.protocol import REASON_FENCED, REASON_STATE_UNAVAILABLE, dialog_json
from callpark.node.workers import WorkerHandle, WorkerPool
from callpark.ratelimit import ScanLimit, ScanLimiter
from callpark.store.memkv import MemoryKV
from callpark.store.parking import ParkTable
from callpark.store.records import CallState, Dialog, Holder, NodeId, ParkKind, RecordDecoder
from callpark.store.session import LeaseTimings
from tests.node.faults import FaultKV

POOL = "pool-a"
RANGES = [OrbitRange("r", "7000", "7001", POOL)]
EDGE = "10.9.9.9:5060"


class CutKV(MemoryKV):
    """A store whose last request failed (the node's fail-fast signal)."""

    cut = False

    def unreachable(self) -> bool:
        return self.cut


@dataclass
class Facts:
    """A fixed view of the cluster (what ``ClusterView`` gives the decisions)."""

    ranges: list[OrbitRange] = field(default_factory=lambda: list(RANGES))
    all_ranges: list[OrbitRange] = field(default_factory=lambda: list(RANGES))
    settings: CpsSettings = DEFAULTS
    draining: bool = False
    live_nodes: dict[str, bool] = field(default_factory=dict)
    elsewhere: str | None = None
    refreshes: int = 0

    def owner_elsewhere(self, orbit: str | None) -> str | None:
        return self.elsewhere

    def refresh_config(self, force: bool = False) -> None:
        self.refreshes += 1

    def refresh_owners(self) -> bool:
        return False

    def home_music(self, range_name: str) -> str | None:
        return f"/music/{range_name}.wav"

    def announcement(self, orbit: str, range_name: str) -> str | None:
        return f"/announce/{orbit}.wav"


@dataclass
class Node:
    kv: CutKV | FaultKV
    member: Membership
    calls: HeldCalls
    facts: Facts
    workers: WorkerPool
    decisions: Decisions
    valid: list[bool]

    @property
    def w0(self) -> WorkerHandle:
        return self.workers.handles[0]

    @property
    def w1(self) -> WorkerHandle:
        return self.workers.handles[1]


def make_node(
    tmp_path: Path, kv: CutKV | FaultKV | None = None, name: str = "n1", edge: str | None = None, pool: str = POOL
) -> Node:
    kv = kv or CutKV()
    config = NodeConfig(pool=pool, name=name, run_dir=tmp_path, edge=edge, domain="example.test")
    metrics = NodeMetrics(pool, name)
    member = Membership(kv, pool=pool, node=name, timings=LeaseTimings())
    member.join({"ready": True})
    table = ParkTable(kv, node=name, pool=pool, member_key=member.key)
    table.lease = member.lease
    valid = [True]
    me = NodeId(pool, name, f"{name}-incarnation")
    ctx = NodeContext(config, kv, table, metrics, RecordDecoder(metrics.registry), lambda: valid[0], me)
    calls = HeldCalls(ctx)
    trusted = config.peers()
    workers = WorkerPool(ctx, trusted, on_message=lambda w, m: None, music_path=lambda: None)
    for index in range(2):
        handle = WorkerHandle(index, 5070 + index, 0, free_slots=3)
        handle.ready.set()
        workers.handles.append(handle)
    facts = Facts()
    scan = ScanLimiter(ScanLimit(burst=2, per_minute=1.0))
    decisions = Decisions(ctx, calls=calls, facts=facts, pick_worker=workers.pick, scan=scan)
    return Node(kv, member, calls, facts, workers, decisions, valid)


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return make_node(tmp_path)


def park_msg(**extra: Any) -> dict[str, Any]:
    msg = {
        "op": "park",
        "req": 1,
        "call": "c1",
        "call_id": "cid@phone",
        "remote_tag": "rtag",
        "contact": "sip:alice@10.0.0.5:5062",
        "from_uri": "sip:alice@example.test",
        "referred_by": "sip:bob@example.test",
        "supports_replaces": True,
        "target": "park",
        "peer": "10.0.0.5:5062",
        "free": 3,
    }
    return {**msg, **extra}


def retrieve_msg(orbit: str, **extra: Any) -> dict[str, Any]:
    msg = {
        "op": "retrieve",
        "req": 2,
        "call": "c2",
        "orbit": orbit,
        "from_uri": "sip:carol@example.test",
        "contact": "sip:carol@10.0.0.6:5062",
        "supports_replaces": True,
        "peer": "10.0.0.6:5062",
    }
    return {**msg, **extra}


# -- park ------------------------------------------------------------------------------------------


def test_a_park_answers_with_the_first_free_orbit_and_records_the_call(node: Node) -> None:
    reply = node.decisions.park(node.w0, park_msg())
    assert reply.action == "answer" and reply.counter is None  # counted once the worker answers
    orbit, park_id = reply.fields["orbit"], reply.fields["park_id"]
    assert orbit == "7000"
    assert reply.fields["retrieve_uri"] == f"sip:7000@127.0.0.1:5070;park-id={park_id}"
    assert reply.fields["music"] == DEFAULTS.enable_music_on_hold
    held = node.calls.held[orbit]
    assert reply.fields["music_path"] == f"/music/{held.call.range}.wav"  # the range's home pool's music
    assert "announce" not in reply.fields  # a blind parker is not on this call
    assert held.call.kind == ParkKind.BLIND and held.call.parker_uri == "sip:bob@example.test"
    assert held.call.holder == Holder("n1", 0, "127.0.0.1:5070", POOL, "n1-incarnation")
    assert held.call.dialog.remote_contact == "sip:alice@10.0.0.5:5062"
    assert (0, "c1") in node.calls.started
    stored = node.decisions.table.get(orbit)
    assert stored is not None and stored.call.park_id == park_id


def test_a_park_without_referred_by_is_attended_and_rings_back_the_caller(node: Node) -> None:
    reply = node.decisions.park(node.w0, park_msg(referred_by=None))
    call = node.calls.held[reply.fields["orbit"]].call
    assert call.kind == ParkKind.ATTENDED and call.parker_uri == "sip:alice@example.test"
    assert reply.fields["announce"] == f"/announce/{call.orbit}.wav"  # the parker hears the orbit


def test_the_retrieve_uri_names_the_edge_when_there_is_one(tmp_path: Path) -> None:
    node = make_node(tmp_path, edge=EDGE)
    reply = node.decisions.park(node.w0, park_msg())
    assert reply.fields["retrieve_uri"].startswith("sip:7000@10.9.9.9;park-id=")
    assert node.decisions.retrieve_uri("*7#", "p1", node.w0) == "sip:%2A7%23@10.9.9.9;park-id=p1"


@pytest.mark.parametrize(
    ("state", "code", "reason", "result"),
    [
        ("fenced", 503, REASON_FENCED, "fenced"),
        ("cut", 503, REASON_STATE_UNAVAILABLE, "etcd-unreachable"),
        ("draining", 503, "Park node draining", "draining"),
    ],
)
def test_a_node_that_cannot_park_refuses_with_a_503(
    node: Node, state: str, code: int, reason: str, result: str
) -> None:
    node.valid[0] = state != "fenced"
    node.kv.cut = state == "cut"
    node.facts.draining = state == "draining"
    reply = node.decisions.park(node.w0, park_msg())
    assert (reply.action, reply.code, reply.fields["reason"]) == ("reject", code, reason)
    assert (reply.counter, reply.result) == (PARKS, result)
    assert not node.calls.held


def test_a_full_worker_redirects_to_its_roomiest_sibling_or_refuses(node: Node) -> None:
    reply = node.decisions.park(node.w0, park_msg(free=0))
    assert (reply.action, reply.fields["contact"], reply.result) == (
        "redirect",
        "sip:park@127.0.0.1:5071",
        "redirected",
    )
    node.w1.free_slots = 1  # one slot is not one spare
    reply = node.decisions.park(node.w0, park_msg(free=0))
    assert (reply.code, reply.fields["reason"], reply.result) == (503, "No free call slot", "no-slot")


def test_a_park_for_a_range_another_pool_owns_is_redirected_there(node: Node) -> None:
    node.facts.elsewhere = "10.0.0.9:5070"
    reply = node.decisions.park(node.w0, park_msg(target="7001"))
    assert (reply.action, reply.fields["contact"]) == ("redirect", "sip:7001@10.0.0.9:5070")
    assert reply.result == "redirected-to-owner"


def test_no_free_orbit_and_a_taken_directed_orbit_are_486(node: Node) -> None:
    assert node.decisions.park(node.w0, park_msg(call="a")).fields["orbit"] == "7000"
    taken = node.decisions.park(node.w0, park_msg(call="b", target="7000"))
    assert (taken.code, taken.fields["reason"], taken.result) == (486, "Orbit not available", "orbit-taken")
    assert node.decisions.park(node.w0, park_msg(call="c")).fields["orbit"] == "7001"
    full = node.decisions.park(node.w0, park_msg(call="d"))
    assert (full.code, full.fields["reason"], full.result) == (486, "No more available orbits", "no-orbit")
    assert full.fields["warning"].startswith("35002 ")


# -- retrieve --------------------------------------------------------------------------------------


def test_a_retrieval_on_the_holding_worker_claims_the_call_and_connects(node: Node) -> None:
    orbit = node.decisions.park(node.w0, park_msg()).fields["orbit"]
    reply = node.decisions.retrieve(node.w0, retrieve_msg(orbit))
    assert (reply.action, reply.fields, reply.result) == ("connect", {"orbit": orbit, "replaces": True}, "ok")
    assert reply.counter == RETRIEVALS
    assert node.calls.held[orbit].call.state == CallState.RETRIEVING
    again = node.decisions.retrieve(node.w0, retrieve_msg(orbit))
    assert (again.code, again.fields["reason"], again.result) == (486, "Orbit busy", "lost-race")


def test_replaces_is_offered_only_when_both_sides_support_it(node: Node) -> None:
    orbit = node.decisions.park(node.w0, park_msg()).fields["orbit"]
    reply = node.decisions.retrieve(node.w0, retrieve_msg(orbit, supports_replaces=False))
    assert reply.fields["replaces"] is False


def test_a_retrieval_on_another_worker_is_redirected_to_the_holder_with_its_park_id(node: Node) -> None:
    parked = node.decisions.park(node.w0, park_msg())
    orbit, park_id = parked.fields["orbit"], parked.fields["park_id"]
    reply = node.decisions.retrieve(node.w1, retrieve_msg(orbit, park_id=park_id))
    assert (reply.action, reply.result) == ("redirect", "redirected")
    assert reply.fields["contact"] == f"sip:{orbit}@127.0.0.1:5070;park-id={park_id}"


def test_a_call_held_by_another_node_is_redirected_while_it_lives(tmp_path: Path) -> None:
    kv = CutKV()
    other = make_node(tmp_path / "n2", kv, name="n2")
    orbit = other.decisions.park(other.w1, park_msg()).fields["orbit"]
    node = make_node(tmp_path / "n1", kv)
    gone = node.decisions.retrieve(node.w0, retrieve_msg(orbit))
    assert (gone.code, gone.fields["reason"], gone.result) == (480, "Parked call being taken over", "holder-gone")
    node.facts.live_nodes = {"pool-a/n2": False}
    reply = node.decisions.retrieve(node.w0, retrieve_msg(orbit))
    assert (reply.action, reply.fields["contact"]) == ("redirect", f"sip:{orbit}@127.0.0.1:5071")


def test_a_stale_park_id_never_connects(node: Node) -> None:
    orbit = node.decisions.park(node.w0, park_msg()).fields["orbit"]
    reply = node.decisions.retrieve(node.w0, retrieve_msg(orbit, park_id="not-this-one"))
    assert (reply.code, reply.fields["reason"], reply.result) == (404, "Parked call gone", "stale-park-id")
    assert node.calls.held[orbit].call.state == CallState.PARKED


def test_an_empty_orbit_is_404_and_a_transfer_to_it_is_a_directed_park(node: Node) -> None:
    miss = node.decisions.retrieve(node.w0, retrieve_msg("7001"))
    assert (miss.code, miss.fields["reason"], miss.result) == (404, "Orbit not found", "not-found")
    park = node.decisions.retrieve(node.w0, retrieve_msg("7001", referred_by="sip:bob@example.test", call="c9"))
    assert (park.action, park.fields["orbit"]) == ("answer", "7001")
    assert node.calls.held["7001"].call.kind == ParkKind.DIRECTED


def test_a_source_that_misses_too_often_is_refused_with_retry_after(node: Node) -> None:
    for _ in range(2):
        assert node.decisions.retrieve(node.w0, retrieve_msg("7000")).result == "not-found"
    reply = node.decisions.retrieve(node.w0, retrieve_msg("7000"))
    assert (reply.code, reply.fields["reason"], reply.result) == (480, "Too Many Unknown Orbits", "scan-limited")
    assert reply.fields["retry_after"] >= 1
    other = node.decisions.retrieve(node.w0, retrieve_msg("7000", peer="10.0.0.7:5062"))
    assert other.result == "not-found"  # only that source


def test_a_fenced_or_cut_node_refuses_retrievals(node: Node) -> None:
    node.kv.cut = True
    reply = node.decisions.retrieve(node.w0, retrieve_msg("7000"))
    assert (reply.code, reply.fields["reason"], reply.result) == (503, REASON_STATE_UNAVAILABLE, "etcd-unreachable")
    node.valid[0] = False
    reply = node.decisions.retrieve(node.w0, retrieve_msg("7000"))
    assert (reply.code, reply.fields["reason"], reply.result) == (503, REASON_FENCED, "fenced")


def test_the_source_header_is_believed_only_from_the_edge(tmp_path: Path) -> None:
    node = make_node(tmp_path, edge=EDGE)
    source = node.decisions.source
    assert source({"peer": EDGE, "origin": "192.0.2.7"}) == "192.0.2.7"
    assert source({"peer": "10.0.0.5:5060", "origin": "192.0.2.7"}) == "10.0.0.5"
    assert source({"peer": EDGE, "origin": "not-an-ip"}) == "10.9.9.9"
    assert source({}) == "unknown"


# -- the dialog on the wire ------------------------------------------------------------------------


def test_dialog_json_round_trips_the_stored_dialog() -> None:
    dialog = Dialog("cid@h", "lt", "rt", "sip:a@10.0.0.5:5062", "sip:a@example.test", True)
    assert Dialog.from_json(dialog_json(dialog)) == dialog
    with pytest.raises(ValueError):
        Dialog.from_json({"call_id": "cid@h"})


def test_a_park_whose_referred_by_is_outside_the_sip_domains_is_refused(node: Node) -> None:
    """Toll fraud: the parker URI is where the orbit MESSAGE and ringbacks go; one outside the
    deployment's domains is refused at park (403, counted), and nothing is parked."""
    for outside in ("sip:premium@198.51.100.7", "<sip:premium@example.org>", "tel:+19005550100", "garbage<"):
        reply = node.decisions.park(node.w0, park_msg(referred_by=outside))
        assert reply.action == "reject" and (reply.counter, reply.result) == ("parks", "foreign-parker"), outside
        assert (reply.fields["code"], reply.fields["reason"]) == (403, "Forbidden: Referred-By outside the SIP domains")
    assert node.calls.held == {}
    assert node.decisions.park(node.w0, park_msg(referred_by="<sip:bob@EXAMPLE.test>")).action == "answer"


def test_a_directed_park_on_an_unknown_range_reads_the_configuration_once_per_second(node: Node) -> None:
    before = node.facts.refreshes
    refused = node.decisions.park(node.w0, park_msg(target="7500"))  # a range added a moment ago?
    assert node.facts.refreshes == before + 1, "an orbit of no known range makes the node read its config"
    assert refused.code == 486, "still unknown after the read: refused as before"
    node.decisions.park(node.w0, park_msg(target="7501", call="c2"))
    assert node.facts.refreshes == before + 1, "at most one such read per second"
    node.decisions.park(node.w0, park_msg(target="7001", call="c3"))
    assert node.facts.refreshes == before + 1, "an orbit of a known range reads nothing"


def test_a_transfer_to_an_orbit_of_an_unknown_range_reads_the_configuration_first(node: Node) -> None:
    before = node.facts.refreshes
    node.facts.all_ranges = []  # the node has not seen the range yet (it refreshes every 2 s)

    def learn(force: bool = False) -> None:
        node.facts.refreshes += 1
        node.facts.all_ranges = list(RANGES)
        node.facts.ranges = list(RANGES)

    node.facts.refresh_config = learn  # type: ignore[method-assign]
    park = node.decisions.retrieve(node.w0, retrieve_msg("7001", referred_by="sip:bob@example.test", call="c9"))
    assert (park.action, park.fields["orbit"]) == ("answer", "7001"), "parked, not '404 Orbit not found'"
    assert node.facts.refreshes == before + 1
