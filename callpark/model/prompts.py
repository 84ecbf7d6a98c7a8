"""Spoken prompts: which recordings say an orbit, their checks, and the announcement they make.

An announcement is "parked on" followed by the orbit spoken character by character
("seven zero zero one"; ``*`` is "star", ``#`` is "pound"). The shipped prompts are
espeak-ng voices stored as 8 kHz 16-bit mono WAV (``callpark/data/prompts/``, rebuilt by
``callpark prompts build``); an admin may replace any of them per pool. A prompt must be
PCM 16-bit mono at 8 kHz (so prompts concatenate without resampling) and fit one
etcd value (:data:`MAX_PROMPT_BYTES`).
"""

from __future__ import annotations

import io
import wave
from collections.abc import Mapping, Sequence

from callpark.errors import ValidationError
from callpark.model.music import validate_wav

PROMPT_RATE = 8_000
MAX_PROMPT_BYTES = 256 * 1024  # one value, well below etcd's request limit (about 16 s of audio)
LEAD_IN_S = 0.3  # silence before the words: the phone's media path settles meanwhile
GAP_S = 0.08  # silence between words

WORDING = "parked-on"
_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PROMPT_TEXT: dict[str, str] = {
    WORDING: "parked on",
    **{str(d): word for d, word in enumerate(_DIGITS)},
    "star": "star",
    "pound": "pound",
}
"""Every prompt name and the words it says: ``parked-on``, ``0``..``9``, ``star``, ``pound``."""
PROMPT_NAMES: tuple[str, ...] = tuple(PROMPT_TEXT)


def prompt_for(char: str) -> str:
    """The prompt name that says one character of an orbit."""
    name = {"*": "star", "#": "pound"}.get(char, char)
    if name not in PROMPT_TEXT or name == WORDING:
        raise ValidationError("prompt-orbit", f"orbit character {char!r} has no prompt")
    return name


def announcement(orbit: str) -> list[str]:
    """The prompt names that announce ``orbit``: the wording, then each character."""
    return [WORDING, *(prompt_for(c) for c in orbit)]


def check_name(name: str) -> str:
    """``name`` if it is a prompt name, else a one-line error listing the names."""
    if name not in PROMPT_TEXT:
        raise ValidationError("prompt-name", f"unknown prompt {name!r}; prompts are {', '.join(PROMPT_NAMES)}")
    return name


def validate_prompt(data: bytes) -> float:
    """Check ``data`` is a usable prompt; returns its duration in seconds."""
    if len(data) > MAX_PROMPT_BYTES:
        raise ValidationError(
            "prompt-size", f"prompt file is {len(data)} bytes; the limit is {MAX_PROMPT_BYTES} bytes (256 KiB)"
        )
    info = validate_wav(data)
    if info.sample_rate != PROMPT_RATE:
        raise ValidationError(
            "prompt-rate", f"prompt file is {info.sample_rate} Hz; prompts must be {PROMPT_RATE} Hz (sox -r 8000)"
        )
    try:
        pcm_frames(data)  # what rendering reads (plain PCM only: no WAVE_FORMAT_EXTENSIBLE)
    except (wave.Error, EOFError) as exc:
        raise ValidationError("prompt-format", f"prompt file cannot be read as plain PCM WAV: {exc}") from None
    return info.duration_s


def pcm_frames(data: bytes) -> bytes:
    """The 16-bit samples of a validated prompt WAV."""
    with wave.open(io.BytesIO(data), "rb") as w:
        return w.readframes(w.getnframes())


def render(names: Sequence[str], prompts: Mapping[str, bytes]) -> bytes:
    """One WAV: a short lead-in, then each named prompt with a short gap between them."""
    silence = b"\x00\x00"
    parts = [silence * int(PROMPT_RATE * LEAD_IN_S)]
    for i, name in enumerate(names):
        if i:
            parts.append(silence * int(PROMPT_RATE * GAP_S))
        parts.append(pcm_frames(prompts[name]))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(PROMPT_RATE)
        w.writeframes(b"".join(parts))
    return out.getvalue()


def layout(names: Sequence[str], prompts: Mapping[str, bytes]) -> list[tuple[str, int, int]]:
    """Where each prompt sits in :func:`render`'s output: (name, first sample, sample count)."""
    pos = int(PROMPT_RATE * LEAD_IN_S)
    out = []
    for i, name in enumerate(names):
        if i:
            pos += int(PROMPT_RATE * GAP_S)
        count = len(pcm_frames(prompts[name])) // 2
        out.append((name, pos, count))
        pos += count
    return out
