"""``callpark moh``: music stored in etcd chunks with a checksum, refusals keep the old music."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from callpark.model.music import CHUNK_BYTES, default_music
from callpark.store import music as mohstore
from callpark.store.admin import AdminStore
from callpark.store.etcd import EtcdStore
from callpark.store.schema import Keys
from tests.conftest import Cli
from tests.test_cli_orbits import assert_refused
from tests.wavs import pcm_wav, with_format_tag


@pytest.fixture
def pool(run_cli: Cli) -> Cli:
    run_cli.ok("pool", "new", "pool-a", "--site", "s1")
    run_cli.ok("pool", "new", "pool-b", "--site", "s2", "--backup", "pool-a")
    return run_cli


def test_set_get_reset_round_trip_across_chunks(pool: Cli, etcd: EtcdStore, tmp_path: Path) -> None:
    music = pcm_wav(rate=48000, seconds=6)  # 576 kB: three chunks
    assert len(music) > 2 * CHUNK_BYTES
    src = tmp_path / "hold.wav"
    src.write_bytes(music)
    out = pool.ok("moh", "set", "--pool", "pool-a", str(src))
    assert "48000 Hz" in out and "3 chunk(s)" in out
    chunk_keys = [k for k in etcd.get_prefix(Keys.MOH_BLOBS).entries]
    assert len(chunk_keys) == 3 and all(len(etcd.get(k).value) <= CHUNK_BYTES for k in chunk_keys)  # type: ignore[union-attr]
    # every pool can read every pool's music (the backup pool always has it)
    back = tmp_path / "back.wav"
    info = json.loads(pool.ok("moh", "get", "--pool", "pool-a", "--output", str(back), "--json"))
    assert back.read_bytes() == music and info["filename"] == "hold.wav" and info["sample_rate"] == 48000
    pool.ok("moh", "reset", "--pool", "pool-a")
    pool.ok("moh", "get", "--pool", "pool-a", "--output", str(back))
    assert back.read_bytes() == default_music()
    assert etcd.get_prefix(Keys.MOH_BLOBS).entries == {}, "reset must remove the old chunks"


def test_replacing_music_removes_the_old_chunks(pool: Cli, etcd: EtcdStore, tmp_path: Path) -> None:
    for i, rate in enumerate((8000, 16000)):
        f = tmp_path / f"m{i}.wav"
        f.write_bytes(pcm_wav(rate=rate, seconds=1))
        pool.ok("moh", "set", "--pool", "pool-a", str(f))
    blobs = {k.split("/")[-2] for k in etcd.get_prefix(Keys.MOH_BLOBS).entries}
    assert len(blobs) == 1


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (b"not audio at all", "moh-not-wav"),
        (pcm_wav(channels=2), "moh-channels"),
        (pcm_wav(width=1), "moh-bits"),
        (pcm_wav(rate=96000, seconds=0.3), "moh-rate"),
        (with_format_tag(pcm_wav(), 0x0161), "moh-codec"),
        (pcm_wav(seconds=1)[:-500], "moh-truncated"),
    ],
)
def test_bad_files_are_refused_and_the_old_music_kept(
    pool: Cli, etcd: EtcdStore, tmp_path: Path, data: bytes, rule: str
) -> None:
    good = tmp_path / "good.wav"
    good.write_bytes(pcm_wav(seconds=1))
    pool.ok("moh", "set", "--pool", "pool-a", str(good))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(data)
    assert_refused(pool, etcd, rule, "moh", "set", "--pool", "pool-a", str(bad))
    out = tmp_path / "out.wav"
    pool.ok("moh", "get", "--pool", "pool-a", "--output", str(out))
    assert out.read_bytes() == good.read_bytes()


def test_missing_file_and_unknown_pool(pool: Cli, etcd: EtcdStore, tmp_path: Path) -> None:
    assert_refused(pool, etcd, "moh-file", "moh", "set", "--pool", "pool-a", str(tmp_path / "nope.wav"))
    f = tmp_path / "m.wav"
    f.write_bytes(pcm_wav())
    result = pool("moh", "set", "--pool", "ghost", str(f))
    assert result.code == 1 and "[not-found]" in result.err


def test_corrupted_chunks_are_detected_by_checksum(pool: Cli, admin_store: AdminStore, tmp_path: Path) -> None:
    f = tmp_path / "m.wav"
    f.write_bytes(pcm_wav(seconds=1))
    pool.ok("moh", "set", "--pool", "pool-a", str(f))
    key = next(iter(admin_store.kv.get_prefix(Keys.MOH_BLOBS).entries))
    from callpark.store.kv import Put

    admin_store.kv.txn([], [Put(key, b"RIFF-garbage")])
    result = pool("moh", "get", "--pool", "pool-a")
    assert result.code == 3 and "checksum" in result.err
    with pytest.raises(Exception, match="checksum"):
        mohstore.fetch(admin_store, "pool-a")
