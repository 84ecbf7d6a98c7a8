"""Malformed and hostile etcd records on the in-memory store: reported once, skipped, never fatal."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from callpark.dr.controller import Controller, ControllerConfig
from callpark.errors import StoreDataError
from callpark.model import admin
from callpark.model.orbits import OrbitRange
from callpark.store.admin import AdminStore
from callpark.store.kv import Put
from callpark.store.memkv import MemoryKV
from callpark.store.ownership import read_snapshot
from callpark.store.parking import ParkTable, prune_history
from callpark.store.records import RecordDecoder
from callpark.store.schema import Keys

GARBAGE = {
    "truncated": b'{"v": 1, "orbit": "70',
    "wrong types": json.dumps({"v": 1, "orbit": 7001, "holder": [1], "parked_at": "now"}).encode(),
    "unknown version": b'{"v": 99}',
    "huge": b'{"v": 1, "x": "' + b"a" * 100_000 + b'"}',
    "not utf-8": b"\xff\xfe\xfd",
    "infinite": b'{"v": 1, "epoch": 1e400, "attempts": 1e400, "at": 1e400}',
}


def configured() -> MemoryKV:
    kv = MemoryKV()
    store = AdminStore(kv)
    store.change(lambda s: admin.new_pool(s, "a", "site-a"))
    store.change(lambda s: admin.new_range(s, OrbitRange("a-park", "7000", "7009", "a")))
    return kv


def poison(kv: MemoryKV) -> None:
    """One garbage value of each shape under every prefix a service reads."""
    for i, raw in enumerate(GARBAGE.values()):
        kv.txn(
            [],
            [
                Put(Keys.parked(f"70{i:02d}"), raw),
                Put(Keys.owner(f"junk{i}"), raw),
                Put(Keys.member("a", f"ghost{i}"), raw),
                Put(Keys.range(f"bad{i}"), raw),
                Put(Keys.pool(f"bad{i}"), raw),
                Put(Keys.request(0, "failover", str(i)), raw),
                Put(Keys.lru(f"70{i:02d}"), raw),
                Put(Keys.history(f"h{i}"), raw),
                Put(Keys.event(0, str(i)), raw),
            ],
        )


def test_the_controller_keeps_deciding_and_counts_each_skip_once(caplog: pytest.LogCaptureFixture) -> None:
    kv = configured()
    poison(kv)
    kv.txn([], [Put(Keys.LEADER + "-x", b"\xff")])
    c = Controller(kv, ControllerConfig(name="c1", loop_s=0.5, grace_s=2.0, ttl_s=6, safety_s=1.5))
    with caplog.at_level(logging.WARNING, logger="callpark.store.records"):
        said = c.run_cycle()
        c.run_cycle()
        c.run_cycle()
    assert "assigned 1 new range(s) to their home pools (a-park)" in said
    n = len(GARBAGE)
    # two of the garbage values are well-formed member records (no flags: never ready)
    assert c.decoder.counts == {"parked": n, "owner": n, "member": n - 2, "config": 2 * n, "request": n}
    text = caplog.text
    assert text.count("'/callpark/v1/parked/7000'") == 1, "one WARNING per key and revision"
    assert "a" * 300 not in text and "\n" not in text.strip().splitlines()[0]
    metrics = c.metrics.registry.get_sample_value("callpark_etcd_records_skipped_total", {"kind": "config"})
    assert metrics == 2 * n
    # a malformed member key is alive (its lease is real) but never ready: the pool is down
    snap = read_snapshot(kv, RecordDecoder())
    assert not snap.ready_members("a") and len(snap.members["a"]) == n


def test_a_reskip_is_reported_again_after_the_record_changes() -> None:
    kv, decoder = configured(), RecordDecoder()
    table = ParkTable(kv, node="n1", pool="a", member_key=Keys.member("a", "n1"), decoder=decoder)
    kv.txn([], [Put(Keys.parked("7001"), b"{")])
    assert table.all_parked() == [] and table.all_parked() == [] and decoder.counts == {"parked": 1}
    kv.txn([], [Put(Keys.parked("7001"), b"[")])
    assert table.get("7001") is None and decoder.counts == {"parked": 2}


def test_the_park_table_skips_garbage_and_still_allocates() -> None:
    kv, decoder = configured(), RecordDecoder()
    poison(kv)
    table = ParkTable(kv, node="n1", pool="a", member_key=Keys.member("a", "n1"), decoder=decoder)
    assert table.all_parked() == [] and table.get("7000") is None
    rng = AdminStore(kv, decoder=decoder).state().ranges["a-park"]
    assert table.candidates([rng]) == [f"70{i:02d}" for i in range(len(GARBAGE), 10)]  # garbage keys are "taken"
    assert prune_history(kv, now=0.0, decoder=decoder) == len(GARBAGE)  # malformed history is reported, then pruned
    assert decoder.counts == {"parked": len(GARBAGE), "lru": len(GARBAGE), "history": len(GARBAGE), "config": 2 * 6}


def test_admin_commands_stay_strict_services_are_lenient() -> None:
    kv = configured()
    kv.txn([], [Put(Keys.range("bad"), b'{"v": 1, "name": "bad", "start": "x"}')])
    with pytest.raises(StoreDataError, match="config/ranges/bad"):
        AdminStore(kv).state()
    decoder = RecordDecoder()
    assert list(AdminStore(kv, decoder=decoder).state().ranges) == ["a-park"]
    assert decoder.counts == {"config": 1}


def test_a_parked_record_under_another_orbit_or_naming_a_lost_range_is_handled() -> None:
    kv = configured()
    good = {
        "v": 1, "orbit": "7003", "park_id": "p", "pool": "a", "range": "gone", "kind": "blind", "state": "parked",
        "holder": {"node": "n1", "worker": 0, "sip": "h:1"}, "caller_uri": "sip:c@h", "parker_uri": None,
        "dialog": {"call_id": "c", "local_tag": "l", "remote_tag": "r", "remote_contact": "sip:c@h",
                   "remote_uri": "sip:c@h", "supports_replaces": True},
        "parked_at": 1.0, "deadline": 2.0, "attempts": 0,
    }  # fmt: skip
    kv.txn(
        [], [Put(Keys.parked("7004"), json.dumps(good).encode()), Put(Keys.parked("7003"), json.dumps(good).encode())]
    )
    c = Controller(kv, ControllerConfig(name="c1", loop_s=0.5, grace_s=2.0, ttl_s=6, safety_s=1.5))
    assert "assigned" in c.run_cycle() and "no action" in c.run_cycle()  # a range that is gone: no crash
    assert c.decoder.counts == {"parked": 1}  # 7004 names orbit 7003


def test_music_metadata_pointing_at_missing_chunks_does_not_stop_the_node_loop(tmp_path: Path) -> None:
    from callpark.node.supervisor import NodeConfig, Supervisor

    kv = configured()
    meta = {"v": 1, "pool": "a", "sha256": "b" * 64, "size": 100, "chunks": 1, "sample_rate": 8000,
            "duration_s": 1.0, "filename": "x.wav"}  # fmt: skip
    kv.txn([], [Put(Keys.moh_meta("a"), json.dumps(meta).encode())])
    supervisor = Supervisor(NodeConfig(pool="a", name="n1", run_dir=tmp_path), kv)
    supervisor._refresh_config(force=True)  # raised StoreDataError out of every cycle before
    assert [r.name for r in supervisor._ranges] == ["a-park"]
    assert supervisor.decoder.counts == {"config": 1}
