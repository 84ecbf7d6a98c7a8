"""Garbage written into a real etcd while a real node and a real controller run: both keep
working (the node parks and retrieves, the controller assigns owners) and count the skips."""

from __future__ import annotations

import json
from typing import Any

from callpark.lab.controllerproc import ControllerProcess
from callpark.lab.phone.flows import blind_park, connected_call
from callpark.model.orbits import OrbitRange
from callpark.store.kv import Put
from callpark.store.records import encode
from callpark.store.schema import Keys
from callpark.waiting import wait_until
from tests.node.conftest import POOL, ParkLab

GARBAGE: dict[str, bytes] = {
    Keys.parked("7001"): b'{"v": 1, "orbit": "70',  # truncated
    Keys.parked("7002"): json.dumps({"v": 1, "orbit": "7002", "holder": [1], "attempts": 1e400}).encode(),
    Keys.owner("junk"): b"\xff\xfe not utf-8",
    Keys.member(POOL, "ghost"): b'{"v": 1, "x": "' + b"a" * 200_000 + b'"}',  # huge
    Keys.range("bad"): b'{"v": 99, "name": "bad"}',  # unknown schema version
    Keys.pool("bad"): json.dumps({"v": 1, "name": ["bad"], "site": 7}).encode(),  # wrong types
    Keys.cps("site:zz"): json.dumps({"v": 1, "MaxCallPickupAttempts": 1e400}).encode(),
    Keys.request(0, "failover", "x"): b"[]",
    Keys.drain(POOL, "n1"): b"{{{{",  # a malformed drain record does not drain the node
    Keys.lru("7000"): b"null",
    Keys.history("zz"): b"\x00",
}


def parked_by(lab: ParkLab, user: str) -> dict[str, Any] | None:
    """The record of ``user``'s parked call, ignoring records that are not JSON."""
    for entry in lab.store.get_prefix(Keys.PARKED).entries.values():
        try:
            record = json.loads(entry.value)
        except ValueError:
            continue
        mine = isinstance(record, dict) and f"sip:{user}@" in str(record.get("caller_uri"))
        if mine and record["dialog"]["local_tag"] and record["state"] == "parked":
            return dict(record)
    return None


def test_garbage_in_etcd_is_skipped_by_a_running_node_and_controller(lab: ParkLab) -> None:
    lab.configure()
    node = lab.node()
    controller = ControllerProcess(etcd=lab.endpoints, name="c1", run_dir=lab.root)
    try:
        controller.start()
        wait_until(lambda: lab.store.get(Keys.owner("r0")), timeout=10, what="owner of r0")
        lab.store.txn([], [Put(key, raw) for key, raw in GARBAGE.items()])

        # the controller keeps deciding: a new range gets its owner (written directly: admin commands
        # refuse to change a configuration holding a malformed record, naming its key)
        lab.store.txn([], [Put(Keys.range("r1"), encode(OrbitRange("r1", "7100", "7109", POOL).to_json()))])
        wait_until(lambda: lab.store.get(Keys.owner("r1")), timeout=10, what="controller to own r1")

        # the node keeps serving: healthy, ready (not drained by garbage), parks and retrieves
        assert node.get("/healthz")[0] == 200
        wait_until(lambda: node.get("/readyz")[0] == 200, timeout=5, what="node ready")
        parker, alice, carol = lab.phone("parker"), lab.phone("alice", auto_answer=True), lab.phone("carol")
        blind_park(parker, alice, node.park_uri())
        record = wait_until(lambda: parked_by(lab, "alice"), timeout=10, what="alice parked")
        assert record["orbit"] not in ("7001", "7002")  # garbage parked keys count as taken
        since = carol.mark()
        handle = carol.call(node.orbit_uri(record["orbit"]))
        carol.wait_state(handle, "CONFIRMED", since=since, timeout=10)
        connected_call(alice, remote_contains="carol@")
        assert lab.wait_outcome(record["park_id"]) == "retrieved"
        assert node.get("/healthz")[0] == 200

        # every kind of skip is counted, and logged once per key and revision
        for kind in ("parked", "owner", "member", "config", "drain", "lru"):
            wait_until(
                lambda k=kind: node.metric("callpark_etcd_records_skipped_total", kind=k) >= 1,  # type: ignore[misc]
                timeout=5,
                what=f"node skip count {kind}",
            )
        assert node.metric("callpark_etcd_records_skipped_total", kind="parked") == 2
        assert node.metric("callpark_etcd_records_skipped_total", kind="config") == 3
        text = controller.metrics_text()
        for kind in ("parked", "owner", "config", "request", "member"):
            assert f'callpark_etcd_records_skipped_total{{kind="{kind}"}}' in text, kind
        node_log = node.process.log_path.read_text(errors="replace")
        assert node_log.count(f"skipping malformed parked record {Keys.parked('7001')!r}") == 1
        assert "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" not in node_log
        assert "Traceback" not in node_log and "BUG" not in node_log
        controller_log = controller.log_text()
        assert "Traceback" not in controller_log and "BUG" not in controller_log
        assert controller.process.is_running() and node.process.is_running()
    finally:
        controller.stop()
