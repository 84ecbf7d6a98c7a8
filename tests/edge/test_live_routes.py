"""The edge routes orbits by a table kept live from etcd (`callpark edge sync`): no restart."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from callpark.edge.metrics import edge_registry
from callpark.edge.routes import Route, routes
from callpark.edge.sync import RouteSync
from callpark.errors import StoreUnavailable
from callpark.model import admin
from callpark.model.orbits import OrbitRange, RangeType
from callpark.store.admin import AdminStore
from callpark.store.etcd import EtcdStore
from callpark.store.kv import Put
from callpark.store.memkv import MemoryKV
from callpark.store.records import Owner
from callpark.store.schema import Keys
from callpark.waiting import wait_until
from tests.edge.conftest import DOMAIN, Lab, needs_kamailio, needs_sipp, two_pool_config
from tests.edge.uac import Uac

SETS = {"a": 1, "b": 2}


def test_the_table_routes_each_park_range_to_its_owner_with_the_owners_backup() -> None:
    ranges = {
        "park-a": OrbitRange("park-a", "7000", "7999", "a"),
        "star": OrbitRange("star", "*101", "*199", "b"),
        "pickup": OrbitRange("pickup", "8000", "8099", "a", RangeType.GROUP_PICKUP),
        "orphan": OrbitRange("orphan", "9000", "9099", "c"),
    }
    table, skipped = routes(ranges, {"park-a": "b"}, {"a": "b", "b": None, "c": None}, SETS)
    assert table == [
        Route("-", 4, 7000, 7999, 2, 0, "b", "park-a"),  # failed over to b: b's set, b has no backup
        Route("*", 3, 101, 199, 2, 0, "b", "star"),
    ]
    assert skipped == ["range orphan: pool c has no dispatcher set on this edge (re-render the edge)"]
    assert table[0].row() == "-|4|7000|7999|2|0|b|park-a"


class Unreadable(MemoryKV):
    def get_prefix(self, prefix: str, revision: int | None = None):  # type: ignore[no-untyped-def]
        raise StoreUnavailable("etcd unreachable (test)")


@pytest.fixture
def admin_a_b(etcd: EtcdStore) -> AdminStore:
    store = AdminStore(etcd)
    store.change(lambda s: admin.new_pool(s, "a", "site-a"))
    store.change(lambda s: admin.new_pool(s, "b", "site-b", backup="a"))
    store.change(lambda s: admin.new_range(s, OrbitRange("park-a", "7000", "7999", "a")))
    return store


@contextlib.contextmanager
def _syncing(sync: RouteSync) -> Iterator[RouteSync]:
    thread = threading.Thread(target=sync.run, daemon=True)
    thread.start()
    try:
        yield sync
    finally:
        sync.stop()
        thread.join(5)


@needs_kamailio
@needs_sipp
def test_ranges_and_owners_changed_in_etcd_reach_the_running_edge(
    lab: Lab, etcd: EtcdStore, admin_a_b: AdminStore
) -> None:
    a1, b1 = lab.uas("a1"), lab.uas("b1")
    edge = lab.edge(two_pool_config((a1.address,), (b1.address,)))
    pid = edge.pid
    with Uac(edge.address) as caller:
        assert caller.invite(f"sip:8001@{DOMAIN}").status == 404, "not rendered at start"
        with _syncing(RouteSync(etcd, edge.rpc_endpoint, SETS, interval_s=0.1)) as sync:
            wait_until(lambda: sync.table is not None, timeout=5, what="the first table pushed")
            assert caller.invite(f"sip:*150@{DOMAIN}").status == 404, "the live table is authoritative"
            assert caller.invite(f"sip:7001@{DOMAIN}").answered_by == "a1"
            admin_a_b.change(lambda s: admin.new_range(s, OrbitRange("new-b", "8000", "8099", "b")))
            wait_until(
                lambda: caller.invite(f"sip:8001@{DOMAIN}").answered_by == "b1",
                timeout=1.0,
                what="a range added at run time routed within a second",
            )
            etcd.txn([], [Put(Keys.owner("park-a"), Owner("park-a", "b", 2, home="a").to_bytes())])
            wait_until(
                lambda: caller.invite(f"sip:7001@{DOMAIN}").answered_by == "b1",
                timeout=1.0,
                what="an owner change routed within a second",
            )
            edge.stop()  # a restarted edge has no table: the sync notices and pushes it again
            edge.start()
            wait_until(
                lambda: caller.invite(f"sip:8001@{DOMAIN}").answered_by == "b1",
                timeout=5,
                what="the table pushed again after an edge restart",
            )
    assert edge.pid != pid


@needs_kamailio
@needs_sipp
def test_an_edge_that_cannot_reach_etcd_keeps_its_last_table(lab: Lab, etcd: EtcdStore, admin_a_b: AdminStore) -> None:
    a1, b1 = lab.uas("a1"), lab.uas("b1")
    edge = lab.edge(two_pool_config((a1.address,), (b1.address,)))
    admin_a_b.change(lambda s: admin.new_range(s, OrbitRange("new-b", "8000", "8099", "b")))
    sync = RouteSync(etcd, edge.rpc_endpoint, SETS)
    assert sync.cycle().startswith("pushed 2 route(s)")
    assert sync.cycle() == "unchanged"
    sync.kv = Unreadable()
    assert sync.cycle().startswith("etcd unreadable")
    with Uac(edge.address) as caller:
        assert caller.invite(f"sip:8001@{DOMAIN}").answered_by == "b1"
        assert caller.invite(f"sip:7001@{DOMAIN}").answered_by == "a1"


def _samples(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {
        f"{s.name}{'/' + s.labels.get('reason', '') if s.labels else ''}": s.value
        for m in text_string_to_metric_families(text)
        for s in m.samples
    }


@needs_kamailio
@needs_sipp
def test_the_sidecar_exports_the_edges_refusals_and_its_table_age(lab: Lab) -> None:
    a1, b1 = lab.uas("a1"), lab.uas("b1")
    edge = lab.edge(two_pool_config((a1.address,), (b1.address,)))
    synced = [0, 0.0]
    registry = edge_registry(edge.rpc_endpoint, lambda: (int(synced[0]), synced[1]))
    before = _samples(registry)
    assert before["callpark_edge_up"] == 1.0 and before["callpark_edge_refused_total/relay_denied"] == 0.0
    assert before["callpark_edge_routes_age_seconds"] == float("inf"), "never synced"
    with Uac(edge.address) as caller:
        assert caller.invite("sip:victim@192.0.2.1").status == 404  # relaying denied: nothing sent
    synced[:] = [2, time.monotonic()]
    after = _samples(registry)
    assert after["callpark_edge_refused_total/relay_denied"] == 1.0
    assert after["callpark_edge_routes"] == 2.0 and after["callpark_edge_routes_age_seconds"] < 60
    edge.stop()
    assert _samples(registry)["callpark_edge_up"] == 0.0
