"""``callpark prompts``: shipped prompts, per-pool replacements in etcd, one-line refusals."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from callpark import promptbuild
from callpark.model import prompts
from callpark.store import prompts as promptstore
from callpark.store.etcd import EtcdStore
from callpark.store.schema import Keys
from tests.conftest import Cli
from tests.test_cli_orbits import assert_refused
from tests.wavs import pcm_wav


@pytest.fixture
def pool(run_cli: Cli) -> Cli:
    run_cli.ok("pool", "new", "pool-a", "--site", "s1")
    return run_cli


def test_shipped_prompts_are_valid_8k_wavs_for_every_character() -> None:
    shipped = promptstore.shipped()
    assert set(shipped) == set(prompts.PROMPT_NAMES)
    assert sum(len(d) for d in shipped.values()) < 200_000
    for name, data in shipped.items():
        assert 0.2 < prompts.validate_prompt(data) < 2.0, name
    assert prompts.announcement("*7001") == ["parked-on", "star", "7", "0", "0", "1"]


def test_set_show_clear_round_trip(pool: Cli, etcd: EtcdStore, tmp_path: Path) -> None:
    mine = pcm_wav(rate=8000, seconds=0.5, freq=600)
    f = tmp_path / "seven.wav"
    f.write_bytes(mine)
    assert "0.50 s" in pool.ok("prompts", "set", "--pool", "pool-a", "7", str(f))
    assert etcd.get(Keys.prompt("pool-a", "7")).value == mine  # type: ignore[union-attr]
    shown = {p["name"]: p for p in json.loads(pool.ok("prompts", "show", "--pool", "pool-a", "--json"))}
    assert shown["7"]["source"] == "pool" and shown["7"]["size"] == len(mine)
    assert shown["parked-on"]["source"] == "shipped"
    assert promptstore.effective(etcd, "pool-a")["7"] == mine
    assert promptstore.effective(etcd, "pool-b")["7"] == promptstore.shipped()["7"]  # per pool
    pool.ok("prompts", "clear", "--pool", "pool-a", "7")
    assert etcd.get_prefix(Keys.PROMPTS).entries == {}
    pool.ok("prompts", "set", "--pool", "pool-a", "parked-on", str(f))
    pool.ok("prompts", "clear", "--pool", "pool-a")
    assert etcd.get_prefix(Keys.PROMPTS).entries == {}


def extensible_wav(seconds: float = 0.5) -> bytes:
    """8 kHz 16-bit mono PCM written as WAVE_FORMAT_EXTENSIBLE (valid music, not readable by ``wave`` 3.11)."""
    pcm = pcm_wav(rate=8000, seconds=seconds)
    frames = pcm[pcm.index(b"data") + 8 :]
    guid = struct.pack("<H", 1) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 8000, 16000, 2, 16, 22, 16, 4) + guid
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(frames)) + frames
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    ("data", "name", "rule"),
    [
        (b"not audio", "7", "moh-not-wav"),
        (pcm_wav(rate=16000, seconds=0.5), "7", "prompt-rate"),
        (pcm_wav(channels=2, seconds=0.5), "7", "moh-channels"),
        (pcm_wav(rate=8000, seconds=17), "7", "prompt-size"),
        (pcm_wav(rate=8000, seconds=0.5), "eleven", "prompt-name"),
        (extensible_wav(), "7", "prompt-format"),
    ],
)
def test_bad_prompts_are_refused_with_one_line_and_nothing_written(
    pool: Cli, etcd: EtcdStore, tmp_path: Path, data: bytes, name: str, rule: str
) -> None:
    f = tmp_path / "bad.wav"
    f.write_bytes(data)
    assert_refused(pool, etcd, rule, "prompts", "set", "--pool", "pool-a", name, str(f))


def test_missing_file_and_unknown_pool(pool: Cli, etcd: EtcdStore, tmp_path: Path) -> None:
    assert_refused(pool, etcd, "prompt-file", "prompts", "set", "--pool", "pool-a", "7", str(tmp_path / "no.wav"))
    f = tmp_path / "p.wav"
    f.write_bytes(pcm_wav(rate=8000, seconds=0.5))
    for argv in (("set", "--pool", "ghost", "7", str(f)), ("show", "--pool", "ghost")):
        result = pool("prompts", *argv)
        assert result.code == 1 and "[not-found]" in result.err and result.err.count("\n") == 1
    assert etcd.get_prefix(Keys.PROMPTS).entries == {}


def test_build_regenerates_the_shipped_prompts_identically(tmp_path: Path) -> None:
    """espeak-ng is installed by scripts/bootstrap.sh; the committed WAVs are its output."""
    promptbuild.build(tmp_path)
    for name, data in promptstore.shipped().items():
        assert (tmp_path / f"{name}.wav").read_bytes() == data, f"{name}.wav differs from the committed one"
