"""The local etcd manager: real members, health, minority loss, nothing left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from callpark.errors import StoreUnavailable
from callpark.etcdlocal import EtcdStartError, LocalEtcdCluster
from callpark.kv import Put
from callpark.store import EtcdStore


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); ManagedProcess reaps, so check /proc state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


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
    assert not any(_alive(pid) for pid in pids)
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
