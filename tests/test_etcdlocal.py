"""The local etcd manager: real members, health, minority loss, nothing left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from callpark.errors import StoreUnavailable
from callpark.lab.etcd import EtcdStartError, LocalEtcdCluster
from callpark.procs import pid_alive
from callpark.store.etcd import EtcdStore
from callpark.store.kv import Put


def test_three_members_form_one_cluster_and_survive_minority_loss(tmp_path: Path) -> None:
    cluster = LocalEtcdCluster(tmp_path, members=3)
    pids: list[int] = []
    try:
        cluster.start()
        pids = [m.pid for m in cluster.members]
        assert len(set(m.client_port for m in cluster.members)) == 3
        store = EtcdStore.connect(cluster.endpoints, retry_deadline_s=10)
        try:
            store.txn([], [Put("/t/k", b"v")])
            cluster.kill(0)
            assert store.get("/t/k") is not None  # minority loss: still served
            store.txn([], [Put("/t/k2", b"v")])
            cluster.restart(0)
            assert cluster.members[0].healthy()
        finally:
            store.close()
        for m in cluster.members:
            assert m.log_path.exists()
    finally:
        cluster.stop()
    assert not any(pid_alive(pid) for pid in pids)
    assert not any(m.is_running() for m in cluster.members)


def test_quorum_loss_is_reported_as_unavailable(tmp_path: Path) -> None:
    with LocalEtcdCluster(tmp_path, members=3) as cluster:
        store = EtcdStore.connect(cluster.endpoints, request_timeout_s=0.5, retry_deadline_s=1.5)
        try:
            cluster.kill(1)
            cluster.kill(2)
            with pytest.raises(StoreUnavailable, match="etcd unreachable"):
                store.get_prefix("/t/")
        finally:
            store.close()


def test_even_member_count_refused(tmp_path: Path) -> None:
    with pytest.raises(EtcdStartError, match="odd number"):
        LocalEtcdCluster(tmp_path, members=2)


def test_failed_start_leaves_nothing_running(tmp_path: Path) -> None:
    cluster = LocalEtcdCluster(tmp_path, members=1)
    # occupy the member's client port so etcd cannot bind it
    import socket

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", cluster.members[0].client_port))
    blocker.listen()
    try:
        with pytest.raises(EtcdStartError):
            cluster.start(timeout_s=5)
        assert not cluster.members[0].is_running()
    finally:
        blocker.close()


def test_a_store_that_fails_fast_stops_waiting_after_one_time_out_and_recovers(tmp_path: Path) -> None:
    """Found by the chaos suite: requests queued behind etcd time-outs made parking come back
    late when a pool was cut from etcd. With fail_fast_s a time-out fails what follows at once."""
    from callpark.waiting import wait_until

    cluster = LocalEtcdCluster(tmp_path, members=1)
    try:
        cluster.start()
        store = EtcdStore.connect(cluster.endpoints, request_timeout_s=0.3, retry_deadline_s=5.0, fail_fast_s=30.0)
        try:
            store.txn([], [Put("/t/k", b"v")])
            assert not store.unreachable()
            cluster.pause(0)  # requests now time out
            with pytest.raises(StoreUnavailable):
                store.get("/t/k")
            assert store.unreachable()
            cluster.resume(0)
            with pytest.raises(StoreUnavailable, match="failing fast"):
                store.get("/t/k")  # etcd is back, but the store does not try until fail_fast_s passes
            store.fail_fast_s = 0.0
            store._down_until = 0.0  # as if fail_fast_s had passed
            entry = wait_until(lambda: store.get("/t/k"), timeout=10, what="etcd answering again")
            assert entry.value == b"v" and not store.unreachable()
        finally:
            store.close()
    finally:
        cluster.stop()


def test_the_local_etcd_compacts_by_itself_and_refuses_writes_past_its_quota(tmp_path: Path) -> None:
    from callpark.errors import StoreError
    from callpark.waiting import wait_until

    cluster = LocalEtcdCluster(tmp_path, compaction_retention="1s", quota_backend_bytes=1024**2)
    try:
        cluster.start()
        store = EtcdStore.connect(cluster.endpoints, retry_deadline_s=10)
        try:
            store.txn([], [Put("/t/k", b"v1")])
            first = store.get_prefix("/t/").revision
            store.txn([], [Put("/t/k", b"v2")])

            def compacted() -> bool:
                store.txn([], [Put("/t/tick", b"x")])  # periodic compaction needs new revisions
                try:
                    store.get_prefix("/t/", revision=first)
                except StoreError as exc:
                    return "compact" in str(exc)
                return False

            wait_until(compacted, timeout=20, what="the old revision compacted away", interval=0.5)
            with pytest.raises(StoreError, match="space"):
                for i in range(40):  # 40 x 512 KiB > the 1 MiB quota
                    store.txn([], [Put(f"/t/big{i}", bytes(512 * 1024))])
        finally:
            store.close()
    finally:
        cluster.stop()
