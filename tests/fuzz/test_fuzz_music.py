"""Fuzz the WAV parser and the music upload: WavInfo/MohMeta or ValidationError, nothing else."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from callpark.errors import ValidationError
from callpark.model import admin, prompts
from callpark.model.music import MAX_RATE, MIN_RATE, default_music, validate_wav
from callpark.store import music as mohstore
from callpark.store.admin import AdminStore
from callpark.store.memkv import MemoryKV
from tests.fuzz.budget import FUZZ, value_or_refusal

VALID = default_music()[:4000]
VALID = VALID[:4] + struct.pack("<I", len(VALID) - 8) + VALID[8:40] + struct.pack("<I", len(VALID) - 44) + VALID[44:]


@st.composite
def wavs(draw: st.DrawFn) -> bytes:
    """A valid small WAV with a few bytes or header fields overwritten."""
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, 60))
        patch = draw(st.binary(min_size=1, max_size=4))
        data[where : where + len(patch)] = patch
    return bytes(data[: draw(st.integers(0, len(data)))]) if draw(st.booleans()) else bytes(data)


@FUZZ
@given(st.one_of(st.binary(max_size=300), wavs(), st.binary(max_size=40).map(lambda b: b"RIFF" + b[:4] + b"WAVE" + b)))
def test_validate_wav(data: bytes) -> None:
    info = value_or_refusal(validate_wav, data, "moh-")
    assert info is None or (MIN_RATE <= info.sample_rate <= MAX_RATE and info.frames >= 0)


def test_the_reference_wav_is_valid() -> None:
    assert validate_wav(VALID).sample_rate == 8000


@FUZZ
@given(wavs(), st.text(max_size=20))
def test_upload_stores_exactly_the_valid_files(data: bytes, filename: str) -> None:
    store = AdminStore(MemoryKV())
    store.change(lambda s: admin.new_pool(s, "pool-a", "site-a"))
    try:
        meta = mohstore.upload(store, "pool-a", data, filename)
    except ValidationError:
        assert mohstore.fetch(store, "pool-a")[0] is None  # the old (default) music stays
        return
    stored, music = mohstore.fetch(store, "pool-a")
    assert music == data and stored is not None and stored.sha256 == meta.sha256


@FUZZ
@given(st.one_of(st.binary(max_size=300), wavs()))
def test_every_prompt_validate_prompt_accepts_renders(data: bytes) -> None:
    """A prompt an admin could store never makes the node's announcement rendering fail."""
    try:
        prompts.validate_prompt(data)
    except ValidationError as exc:
        assert exc.rule.startswith(("moh-", "prompt-")) and "\n" not in str(exc), exc
        return
    rendered = prompts.render(["parked-on", "7"], {"parked-on": data, "7": data})
    assert prompts.validate_prompt(rendered) > 0
