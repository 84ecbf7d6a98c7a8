"""The answer-swallowing proxy against a real etcd: while it swallows, a write reaches etcd
and applies, but the client only learns that its outcome is unknown, while reads are still
answered on the same connection; after the release (connections reset) writes work again."""

from __future__ import annotations

import pytest

from callpark.chaos.proxy import AnswerSwallower
from callpark.errors import StoreError, StoreIndeterminate
from callpark.lab.etcd import LocalEtcdCluster
from callpark.netutil import LOOPBACK
from callpark.store.etcd import EtcdStore
from callpark.store.kv import Put
from callpark.store.schema import Keys
from callpark.waiting import wait_until


def test_a_swallowed_write_applies_and_its_outcome_is_unknown(etcd_cluster: LocalEtcdCluster, etcd: EtcdStore) -> None:
    proxy = AnswerSwallower(LOOPBACK, [(LOOPBACK, m.client_port) for m in etcd_cluster.members]).start()
    client = EtcdStore.connect(proxy.endpoints(), request_timeout_s=0.5, retry_deadline_s=1.0)
    try:
        client.txn([], [Put(Keys.chaos("before"), b"1")])
        proxy.swallow()
        with pytest.raises(StoreIndeterminate):
            client.txn([], [Put(Keys.chaos("unknown"), b"2")])
        entry = etcd.get(Keys.chaos("unknown"))
        assert entry is not None and entry.value == b"2", "etcd applied the write whose answer was swallowed"
        assert proxy.stats.swallowed_answers >= 1 and proxy.stats.writes >= 2

        def read_back() -> bool:  # reads are answered through the swallowing proxy (after the fail-fast window)
            try:
                got = client.get(Keys.chaos("unknown"))
            except StoreError:
                return False
            return got is not None and got.value == b"2"

        wait_until(read_back, timeout=10, what="a read answered while writes are swallowed")
        for _ in range(3):  # answers keep coming decoded right after swallowed ones (HPACK state in step)
            assert client.get(Keys.chaos("before")) is not None
        assert proxy.release() >= 1 and proxy.stats.resets >= 1

        def written() -> bool:
            try:
                client.txn([], [Put(Keys.chaos("after"), b"3")])
            except StoreError:  # the fail-fast window or the reset connection: try again
                return False
            return True

        wait_until(written, timeout=10, what="a write through the released proxy")
        assert etcd.get(Keys.chaos("after")) is not None
    finally:
        client.close()
        proxy.close()
