"""Reads larger than gRPC's default 4 MiB message: paged prefix reads on one revision, music by chunk."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from callpark.audio import tone_samples, write_wav
from callpark.errors import StoreError
from callpark.lab.etcd import LocalEtcdCluster
from callpark.model.music import CHUNK_BYTES
from callpark.store import etcd as etcdstore
from callpark.store import music as mohstore
from callpark.store.admin import AdminStore
from callpark.store.etcd import EtcdStore
from callpark.store.kv import Delete, Put
from callpark.store.schema import Keys
from tests.conftest import Cli

RECORD_BYTES = 700  # a parked-call record is about 600 bytes
RECORDS = 8000  # 5.6 MB under one prefix: more than gRPC's default 4 MiB receive limit


def _fill(store: EtcdStore, prefix: str, count: int, size: int = RECORD_BYTES) -> int:
    """Write ``count`` keys of ``size`` bytes under ``prefix``; the last revision. A txn holds
    at most 100 puts (etcd allows 128 ops) and about 1 MB (etcd allows 1.5 MiB)."""
    revision = 0
    batch = max(1, min(100, 1_000_000 // size))
    for start in range(0, count, batch):
        puts = [Put(f"{prefix}{i:06d}", _value(i, size)) for i in range(start, min(count, start + batch))]
        revision = store.txn([], puts).revision
    return revision


def _value(i: int, size: int = RECORD_BYTES) -> bytes:
    return f"{i:06d}".encode().ljust(size, b"r")


def _after_first_page(store: EtcdStore, monkeypatch: pytest.MonkeyPatch, act: Callable[[], None]) -> list[int]:
    """Run ``act`` once, right after the store's first range request returns; the revisions asked for."""
    real = store._range
    asked: list[int] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        asked.append(int(kwargs.get("revision", args[2] if len(args) > 2 else 0)))
        result = real(*args, **kwargs)
        if len(asked) == 1:
            act()
        return result

    monkeypatch.setattr(store, "_range", spy)
    return asked


def test_a_prefix_beyond_the_grpc_default_is_read_whole_at_one_revision(
    etcd: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    last = _fill(etcd, Keys.PARKED, RECORDS)

    def write_between_pages() -> None:  # must not show: the later pages read the first page's revision
        etcd.txn([], [Put(f"{Keys.PARKED}zz-late", b"late"), Delete(f"{Keys.PARKED}{RECORDS - 1:06d}")])

    asked = _after_first_page(etcd, monkeypatch, write_between_pages)
    snap = etcd.get_prefix(Keys.PARKED)
    assert snap.revision == last
    assert len(snap.entries) == RECORDS
    assert snap.entries[f"{Keys.PARKED}{RECORDS - 1:06d}"].value == _value(RECORDS - 1)
    assert f"{Keys.PARKED}zz-late" not in snap.entries
    assert list(snap.entries) == sorted(snap.entries)
    assert len(asked) > 1 and set(asked[1:]) == {last}, "every page after the first is pinned to its revision"
    # and a read at a given revision reads there, across pages too
    again = etcd.get_prefix(Keys.PARKED, last)
    assert again.revision == last and again.entries == snap.entries


def test_a_page_over_the_receive_limit_is_asked_again_with_fewer_keys(
    etcd_cluster: LocalEtcdCluster, etcd: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(etcd, Keys.MOH_BLOBS, 10, size=300_000)  # 3 MB: a page of all ten is over the 1 MiB below
    monkeypatch.setattr(etcdstore, "MAX_RECEIVE_BYTES", 1024 * 1024)
    small = EtcdStore.connect(etcd_cluster.endpoints)
    try:
        snap = small.get_prefix(Keys.MOH_BLOBS)
        assert [e.value for e in snap.entries.values()] == [_value(i, 300_000) for i in range(10)]
        etcd.txn([], [Put(f"{Keys.MOH_BLOBS}huge", b"h" * 1_200_000)])  # etcd takes it; it is over 1 MiB
        with pytest.raises(StoreError, match="one value is over 1048576 bytes"):
            small.get_prefix(Keys.MOH_BLOBS)
    finally:
        small.close()


SEVEN_MIB_SECONDS = 77  # 77 s of 48 kHz 16-bit mono: 7.05 MiB


def test_seven_mib_music_is_stored_and_fetched_back_byte_identical(
    run_cli: Cli, etcd_cluster: LocalEtcdCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_cli.ok("pool", "new", "pool-a", "--site", "s1")
    # 440 Hz repeats every second at 48 kHz: one second of tone repeated is one seamless tone
    src = write_wav(tmp_path / "long.wav", tone_samples(440, 1, rate=48000) * SEVEN_MIB_SECONDS, rate=48000)
    music = src.read_bytes()
    assert 7 * 1024 * 1024 <= len(music) <= 8 * 1024 * 1024
    run_cli.ok("moh", "set", "--pool", "pool-a", str(src))
    back = tmp_path / "back.wav"
    info = json.loads(run_cli.ok("moh", "get", "--pool", "pool-a", "--output", str(back), "--json"))
    assert back.read_bytes() == music and info["size"] == len(music)
    # a fetch asks for one chunk a request: it works with a receive limit far below the file
    monkeypatch.setattr(etcdstore, "MAX_RECEIVE_BYTES", 2 * CHUNK_BYTES)
    small = EtcdStore.connect(etcd_cluster.endpoints)
    real = small._range
    chunk_reads: list[bytes] = []

    def one_key_at_a_time(key: bytes, range_end: bytes, *args: Any) -> Any:
        if key.startswith(Keys.MOH_BLOBS.encode()):
            assert range_end == b"", "music is read by key, never as a range"
            chunk_reads.append(key)
        return real(key, range_end, *args)

    monkeypatch.setattr(small, "_range", one_key_at_a_time)
    try:
        meta, data = mohstore.fetch(AdminStore(small), "pool-a")
        assert meta is not None and data == music
        assert len(chunk_reads) == meta.chunks == -(-len(music) // CHUNK_BYTES)
    finally:
        small.close()


# -- compaction while paging: a dedicated etcd, so compacting cannot touch other tests' history --


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcdCluster]:
    with LocalEtcdCluster(tmp_path_factory.mktemp("etcd-compact"), members=1) as cluster:
        yield cluster


@pytest.fixture
def small_pages(own_cluster: LocalEtcdCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[EtcdStore]:
    monkeypatch.setattr(etcdstore, "RANGE_PAGE_KEYS", 10)
    store = EtcdStore.connect(own_cluster.endpoints)
    store.txn([], [Delete("/t/", prefix=True)])
    try:
        yield store
    finally:
        store.close()


def _compact_now(store: EtcdStore) -> None:
    revision = store.txn([], [Put("/t/other", b"x")]).revision
    store._client.compact(revision)


def test_compaction_between_pages_reads_again_from_scratch_once(
    small_pages: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _fill(small_pages, "/t/p/", 35, size=10)
    asked = _after_first_page(small_pages, monkeypatch, lambda: _compact_now(small_pages))
    snap = small_pages.get_prefix("/t/p/")
    assert len(snap.entries) == 35 and snap.revision > first
    assert asked[0] == 0 and asked[1] == first, "the second page asked for the compacted revision"
    assert asked.count(0) == 2, "then the read started again from scratch"


def test_compaction_on_every_attempt_is_a_clear_error(small_pages: EtcdStore, monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(small_pages, "/t/p/", 35, size=10)
    real = small_pages._range

    def compacting(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        _compact_now(small_pages)
        return result

    monkeypatch.setattr(small_pages, "_range", compacting)
    with pytest.raises(StoreError, match="compacted"):
        small_pages.get_prefix("/t/p/")


def test_a_read_at_a_compacted_revision_is_a_clear_error(small_pages: EtcdStore) -> None:
    old = _fill(small_pages, "/t/p/", 3, size=10)
    _compact_now(small_pages)
    with pytest.raises(StoreError, match="compacted"):
        small_pages.get_prefix("/t/p/", old)
