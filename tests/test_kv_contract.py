"""The KV contract, run against real etcd and against the in-memory fake alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from callpark.lab.etcd import LocalEtcdCluster
from callpark.store.etcd import EtcdStore
from callpark.store.kv import KV, Compare, Delete, Put, absent, prefix_end, unchanged
from callpark.store.memkv import MemoryKV
from callpark.store.schema import Keys


@pytest.fixture(params=["etcd", "memory"])
def kv(request: pytest.FixtureRequest, etcd_cluster: LocalEtcdCluster) -> Iterator[KV]:
    if request.param == "memory":
        yield MemoryKV()
        return
    store = EtcdStore.connect(etcd_cluster.endpoints)
    store.txn([], [Delete("/t/", prefix=True), Delete(Keys.ROOT, prefix=True)])
    try:
        yield store
    finally:
        store.txn([], [Delete("/t/", prefix=True)])
        store.close()


def test_create_if_absent_exactly_once(kv: KV) -> None:
    first = kv.txn([absent("/t/a")], [Put("/t/a", b"1")])
    second = kv.txn([absent("/t/a")], [Put("/t/a", b"2")])
    assert first.succeeded and not second.succeeded
    entry = kv.get("/t/a")
    assert entry is not None and entry.value == b"1" and entry.version == 1


def test_guarded_update_uses_mod_revision(kv: KV) -> None:
    kv.txn([], [Put("/t/a", b"1")])
    entry = kv.get("/t/a")
    assert entry is not None
    assert kv.txn([unchanged("/t/a", entry.mod_revision)], [Put("/t/a", b"2")]).succeeded
    assert not kv.txn([unchanged("/t/a", entry.mod_revision)], [Put("/t/a", b"3")]).succeeded
    assert kv.get("/t/a").value == b"2"  # type: ignore[union-attr]


def test_txn_is_all_or_nothing(kv: KV) -> None:
    kv.txn([], [Put("/t/x", b"old")])
    result = kv.txn([absent("/t/x")], [Put("/t/y", b"1"), Delete("/t/x")], [Put("/t/z", b"failure-branch")])
    assert not result.succeeded
    snap = kv.get_prefix("/t/")
    assert set(snap.entries) == {"/t/x", "/t/z"}


def test_prefix_reads_and_prefix_deletes(kv: KV) -> None:
    kv.txn([], [Put("/t/p/1", b"a"), Put("/t/p/2", b"b"), Put("/t/q", b"c")])
    snap = kv.get_prefix("/t/p/")
    assert list(snap.entries) == ["/t/p/1", "/t/p/2"] and snap.revision > 0
    kv.txn([], [Delete("/t/p/", prefix=True)])
    assert list(kv.get_prefix("/t/").entries) == ["/t/q"]


def test_range_compare_over_a_prefix(kv: KV) -> None:
    kv.txn([], [Put("/t/r/1", b"a")])
    rev = kv.get_prefix("/t/r/").revision
    guard = Compare("/t/r/", "mod", "<", rev + 1, range_end=prefix_end("/t/r/"))
    assert kv.txn([guard], []).succeeded
    kv.txn([], [Put("/t/r/2", b"b")])
    assert not kv.txn([guard], []).succeeded


def test_lease_bound_keys_vanish_on_revoke(kv: KV) -> None:
    lease = kv.grant_lease(10)
    assert kv.refresh_lease(lease) == 10
    kv.txn([], [Put("/t/member", b"x", lease=lease)])
    assert kv.get("/t/member") is not None
    kv.revoke_lease(lease)
    assert kv.get("/t/member") is None
    assert kv.refresh_lease(lease) == -1


def test_prefix_end() -> None:
    assert prefix_end("/a/") == "/a0"
    assert prefix_end("ab") == "ac"
