"""The controller's HTTP admin writes against a real controller and etcd: planned failover
and failback with the token (from CALLPARK_ADMIN_TOKEN_FILE), refusals without it."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from callpark.httpapi import SOCKET_TIMEOUT_S
from callpark.lab.controllerproc import ControllerProcess
from callpark.lab.etcd import LocalEtcdCluster
from callpark.model import admin
from callpark.model.orbits import OrbitRange
from callpark.store.admin import AdminStore
from callpark.store.etcd import EtcdStore
from callpark.store.kv import Put
from callpark.store.schema import Keys
from callpark.waiting import wait_until
from tests.node.test_admin_api import TOKEN, request, write_token


def configure(store: EtcdStore) -> None:
    a = AdminStore(store)
    a.change(lambda s: admin.new_pool(s, "pool-b", "site-b"))
    a.change(lambda s: admin.new_pool(s, "pool-a", "site-a", backup="pool-b"))
    a.change(lambda s: admin.new_range(s, OrbitRange("a-park", "7000", "7019", "pool-a")))
    for pool in ("pool-a", "pool-b"):  # a ready member per pool (no lease: the fixture wipes it)
        info = {"v": 1, "node": "n1", "pool": pool, "ready": True, "draining": False, "workers": []}
        store.txn([], [Put(Keys.member(pool, "n1"), json.dumps(info).encode())])


def owner(store: EtcdStore) -> str | None:
    entry = store.get(Keys.owner("a-park"))
    return None if entry is None else str(json.loads(entry.value)["pool"])


@pytest.fixture
def controller(
    etcd: EtcdStore, etcd_cluster: LocalEtcdCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ControllerProcess]:
    configure(etcd)
    monkeypatch.setenv("CALLPARK_ADMIN_TOKEN_FILE", str(write_token(tmp_path / "token")))
    proc = ControllerProcess(etcd=etcd_cluster.endpoints, name="c1", run_dir=tmp_path)
    try:
        yield proc.start()
    finally:
        proc.stop()


def test_failover_and_failback_over_http_need_the_token(controller: ControllerProcess, etcd: EtcdStore) -> None:
    port = int(controller.info["http"])
    wait_until(lambda: owner(etcd) == "pool-a", timeout=10, what="initial owner")
    assert request(port, "POST", "/api/dr/failover?pool=pool-a")[0] == 401
    assert request(port, "POST", "/api/dr/failover?pool=pool-a", token="x" * 40)[0] == 403
    assert request(port, "POST", "/api/dr/failover", token=TOKEN)[0] == 400
    code, body, _ = request(port, "POST", "/api/dr/failover?pool=../etc", token=TOKEN)
    assert code == 400 and "pool-name" in body
    assert request(port, "POST", "/api/dr/failover?pool=nope", token=TOKEN)[0] == 404
    assert request(port, "GET", "/api/dr/failover?pool=pool-a")[0] == 404  # writes are not reads
    assert not etcd.get_prefix(Keys.REQUESTS).entries and owner(etcd) == "pool-a"

    code, body, _ = request(port, "POST", "/api/dr/failover?pool=pool-a", token=TOKEN)
    assert code == 202 and json.loads(body)["request"].startswith(Keys.REQUESTS)
    wait_until(lambda: owner(etcd) == "pool-b", timeout=10, what="planned failover to pool-b")
    code, body, _ = request(port, "POST", "/api/dr/failback?pool=pool-a", token=TOKEN)
    assert code == 202
    wait_until(lambda: owner(etcd) == "pool-a", timeout=10, what="failback to pool-a")
    logs = controller.log_text()
    assert TOKEN not in logs and "admin write refused (wrong token)" in logs


def test_the_controller_closes_idle_connections_and_keeps_answering(controller: ControllerProcess) -> None:
    """Slowloris against the real controller: connections that send nothing are closed after
    the socket time-out while monitoring is answered at once."""
    port = int(controller.info["http"])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
    try:
        began = time.monotonic()
        assert request(port, "GET", "/healthz")[0] == 200 and time.monotonic() - began < SOCKET_TIMEOUT_S / 2
        for conn in idle:
            conn.settimeout(SOCKET_TIMEOUT_S + 5)
            assert conn.recv(1024) == b"", "an idle connection stayed open"
        assert time.monotonic() - began < SOCKET_TIMEOUT_S + 3
    finally:
        for conn in idle:
            conn.close()
