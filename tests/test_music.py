"""Music on hold files: what is accepted, what is refused and why; the default music."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callpark.errors import ValidationError
from callpark.model.music import MAX_MOH_BYTES, default_music, split_chunks, validate_wav
from callpark.store.music import DEFAULT_MUSIC_PATH
from tests.wavs import pcm_wav, with_format_tag


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_accepts_pcm16_mono_8_to_48k(rate: int) -> None:
    info = validate_wav(pcm_wav(rate=rate, seconds=0.5))
    assert info.sample_rate == rate
    assert info.duration_s == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (b"ID3\x03\x00 this is an mp3", "moh-not-wav"),
        (b"", "moh-not-wav"),
        (pcm_wav(channels=2), "moh-channels"),
        (pcm_wav(width=1), "moh-bits"),
        (pcm_wav(width=3), "moh-bits"),
        (pcm_wav(rate=7999), "moh-rate"),
        (pcm_wav(rate=96000, seconds=0.2), "moh-rate"),
        (with_format_tag(pcm_wav(), 6), "moh-codec"),  # A-law
        (with_format_tag(pcm_wav(), 0x0161), "moh-codec"),  # WMA, what Lync wanted
        (pcm_wav()[:-100], "moh-truncated"),
        (pcm_wav(seconds=0.01), "moh-empty"),
    ],
)
def test_refusals_name_the_rule(data: bytes, rule: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_wav(data)
    assert info.value.rule == rule


def test_size_limit() -> None:
    big = pcm_wav(rate=48000, seconds=(MAX_MOH_BYTES // 96000) + 1)
    with pytest.raises(ValidationError) as info:
        validate_wav(big)
    assert info.value.rule == "moh-size"


def test_default_music_is_generated_by_the_project_and_valid() -> None:
    data = default_music()
    assert data == DEFAULT_MUSIC_PATH.read_bytes(), (
        "shipped default-moh.wav must be what callpark.model.music generates"
    )
    info = validate_wav(data)
    assert info.sample_rate == 8000 and info.duration_s == pytest.approx(9.0)


@given(st.binary(max_size=600))
@settings(max_examples=300)
def test_arbitrary_bytes_never_crash_the_validator(data: bytes) -> None:
    with contextlib.suppress(ValidationError):
        validate_wav(data)


@given(st.integers(0, 200), st.binary(min_size=1, max_size=4))
@settings(max_examples=200)
def test_corrupted_valid_file_is_refused_or_still_valid(cut: int, junk: bytes) -> None:
    good = pcm_wav(seconds=0.2)
    for data in (good[: len(good) - cut - 1], good[:40] + junk + good[40 + len(junk) :]):
        try:
            validate_wav(data)
        except ValidationError as exc:
            assert exc.rule.startswith("moh-")


@given(st.binary(max_size=3000), st.integers(1, 1000))
def test_chunks_reassemble(data: bytes, size: int) -> None:
    chunks = split_chunks(data, size)
    assert b"".join(chunks) == data
    assert all(len(c) <= size for c in chunks)
