"""A node started while its name's member key exists: a crashed predecessor is waited out, a live
duplicate refuses the start and the process exits (it used to hang: real etcd, real node processes)."""

from __future__ import annotations

import time

import pytest

from callpark.procs import ProcessFailed, pid_alive
from callpark.store.etcd import EtcdStore
from callpark.store.kv import Put
from callpark.store.records import member_bytes
from callpark.store.schema import Keys
from callpark.waiting import WaitTimeout, wait_until
from tests.node.conftest import POOL, ParkLab


def test_a_node_restarted_while_its_crashed_predecessors_key_lives_starts_once_that_lease_ends(
    lab: ParkLab, etcd: EtcdStore
) -> None:
    lab.configure()
    lease = etcd.grant_lease(3)  # a predecessor killed with -9: its key stays until the lease ends
    etcd.txn([], [Put(Keys.member(POOL, "n1"), member_bytes(POOL, "n1", {"ready": True}), lease=lease)])
    began = time.monotonic()
    node = lab.node("n1", lease_ttl_s=4, keepalive_s=0.5, safety_s=1.0)  # must not exit, must not hang
    assert node.get("/readyz")[0] == 200
    entry = etcd.get(Keys.member(POOL, "n1"))
    assert entry is not None and entry.lease not in (0, lease), "the node holds its own key now"
    assert time.monotonic() - began >= 1.0, "it waited for the predecessor's lease"


def test_a_live_process_of_the_same_name_refuses_the_start_and_the_second_one_exits(lab: ParkLab) -> None:
    lab.configure()
    first = lab.node("n1", lease_ttl_s=4, keepalive_s=0.5, safety_s=1.0)
    with pytest.raises(ProcessFailed) as refused:  # not WaitTimeout: the refused process used to hang
        lab.node("n1", lease_ttl_s=4, keepalive_s=0.5, safety_s=1.0)
    assert "already registered" in str(refused.value)
    second = lab.nodes[-1]
    wait_until(lambda: not pid_alive(second.pid), timeout=10, what="the refused node process gone")
    lab.nodes.remove(second)  # its exit status 1 is the point, not a problem to report
    second.stop()
    assert first.get("/readyz")[0] == 200
    assert not isinstance(refused.value, WaitTimeout)
