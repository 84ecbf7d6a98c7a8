"""PCM16 mono WAV tones/melodies and a Goertzel tone detector (pure Python, no numpy).

Tests prove end-to-end audio with it: one phone plays :func:`write_tone`, the other
records, and :func:`analyse_tone` tells whether (and how loud) the frequency is there.
"""

from __future__ import annotations

import math
import struct
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FULL_SCALE = 32767


def tone_samples(freq_hz: float, seconds: float, *, rate: int = 8000, level: float = 0.5) -> list[int]:
    """Samples of a sine at ``freq_hz`` with amplitude ``level`` (0..1 of full scale)."""
    if not 0.0 <= level <= 1.0:
        raise ValueError("level must be within 0..1")
    count = round(seconds * rate)
    amp = level * FULL_SCALE
    step = 2.0 * math.pi * freq_hz / rate
    return [round(amp * math.sin(step * i)) for i in range(count)]


def melody_samples(
    notes: Sequence[tuple[float, float]], *, rate: int = 8000, level: float = 0.5, fade_ms: float = 5.0
) -> list[int]:
    """Concatenate ``(freq_hz, seconds)`` notes (freq 0 = rest) with short fades (no clicks)."""
    out: list[int] = []
    fade = max(1, round(rate * fade_ms / 1000.0))
    for freq, seconds in notes:
        if freq <= 0:
            out.extend([0] * round(seconds * rate))
            continue
        note = tone_samples(freq, seconds, rate=rate, level=level)
        n = len(note)
        for i in range(min(fade, n // 2)):
            gain = i / fade
            note[i] = round(note[i] * gain)
            note[n - 1 - i] = round(note[n - 1 - i] * gain)
        out.extend(note)
    return out


def write_wav(path: Path | str, samples: Sequence[int], *, rate: int = 8000) -> Path:
    """Write 16-bit mono PCM samples (clipped to int16) to ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    clipped = [max(-32768, min(32767, int(s))) for s in samples]
    with wave.open(str(target), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(struct.pack(f"<{len(clipped)}h", *clipped))
    return target


def write_tone(path: Path | str, freq_hz: float, seconds: float = 1.0, *, rate: int = 8000, level: float = 0.5) -> Path:
    """A WAV of one sine tone. With whole cycles per file it loops without a click."""
    return write_wav(path, tone_samples(freq_hz, seconds, rate=rate, level=level), rate=rate)


def write_melody(
    path: Path | str, notes: Sequence[tuple[float, float]], *, rate: int = 8000, level: float = 0.5
) -> Path:
    """A WAV of ``(freq_hz, seconds)`` notes; usable as music on hold."""
    return write_wav(path, melody_samples(notes, rate=rate, level=level), rate=rate)


def read_wav(path: Path | str) -> tuple[int, list[int]]:
    """Read a PCM WAV (8/16-bit, any channel count) as ``(rate, first-channel int16 samples)``."""
    with wave.open(str(path), "rb") as wav:
        rate = wav.getframerate()
        channels = wav.getnchannels()
        width = wav.getsampwidth()
        frames = wav.readframes(wav.getnframes())
    if width == 2:
        values = list(struct.unpack(f"<{len(frames) // 2}h", frames[: len(frames) // 2 * 2]))
    elif width == 1:
        values = [(b - 128) << 8 for b in frames]
    else:
        raise ValueError(f"unsupported sample width {width}")
    return rate, values[::channels]


def goertzel_amplitude(samples: Sequence[int], rate: int, freq_hz: float) -> float:
    """Amplitude (0..1 of full scale) of the ``freq_hz`` component of ``samples``."""
    n = len(samples)
    if n == 0:
        return 0.0
    coeff = 2.0 * math.cos(2.0 * math.pi * freq_hz / rate)
    s_prev = 0.0
    s_prev2 = 0.0
    for x in samples:
        s = x + coeff * s_prev - s_prev2
        s_prev2 = s_prev
        s_prev = s
    power = s_prev2 * s_prev2 + s_prev * s_prev - coeff * s_prev * s_prev2
    return 2.0 * math.sqrt(max(power, 0.0)) / n / FULL_SCALE


def rms_level(samples: Sequence[int]) -> float:
    """RMS of ``samples`` relative to full scale."""
    if not samples:
        return 0.0
    return math.sqrt(sum(float(s) * s for s in samples) / len(samples)) / FULL_SCALE


@dataclass(frozen=True)
class ToneReport:
    """Result of :func:`analyse_tone`.

    ``level``: median tone amplitude over the blocks where the tone is present
    (0..1 of full scale; 0 when never present). ``presence``: fraction of blocks where it
    is present. ``purity``: median share of the block's power that is this tone.
    """

    freq_hz: float
    level: float
    presence: float
    purity: float
    blocks: int
    rms: float

    def present(self, *, min_presence: float = 0.3) -> bool:
        return self.blocks > 0 and self.presence >= min_presence


def analyse_tone(
    path: Path | str,
    freq_hz: float,
    *,
    block_s: float = 0.1,
    min_level: float = 0.02,
    min_purity: float = 0.5,
    skip_s: float = 0.0,
) -> ToneReport:
    """Look for ``freq_hz`` in a WAV, block by block (``block_s``), after ``skip_s``.

    A block has the tone when its amplitude is >= ``min_level`` and the tone carries
    at least ``min_purity`` of the block's power (so broadband noise does not count).
    """
    rate, samples = read_wav(path)
    samples = samples[round(skip_s * rate) :]
    size = max(1, round(block_s * rate))
    levels: list[float] = []
    purities: list[float] = []
    blocks = 0
    for start in range(0, len(samples) - size + 1, size):
        block = samples[start : start + size]
        blocks += 1
        amp = goertzel_amplitude(block, rate, freq_hz)
        rms = rms_level(block)
        purity = (amp * amp / 2.0) / (rms * rms) if rms > 0 else 0.0
        if amp >= min_level and purity >= min_purity:
            levels.append(amp)
            purities.append(min(purity, 1.0))
    return ToneReport(
        freq_hz=freq_hz,
        level=_median(levels),
        presence=len(levels) / blocks if blocks else 0.0,
        purity=_median(purities),
        blocks=blocks,
        rms=rms_level(samples),
    )


def tone_present(path: Path | str, freq_hz: float, *, min_presence: float = 0.3, **kwargs: float) -> bool:
    """Whether ``freq_hz`` is clearly audible in at least ``min_presence`` of the WAV."""
    return analyse_tone(path, freq_hz, **kwargs).present(min_presence=min_presence)


def _median(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0
