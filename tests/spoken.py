"""Which orbit a recording speaks: template matching against the prompt audio (pure Python).

The recording is cut into 20 ms frames; each frame becomes a vector of log band energies
(a coarse spectrogram: 16 bands from 200 to 3400 Hz, from a small DFT). The expected
announcement (the prompts rendered exactly as the node renders them) is slid over the
recording to find where it starts; then each character slot is compared with every
candidate prompt (``0``..``9``, ``star``, ``pound``) by normalised correlation, and the best
one is what was said. So a recording of "parked on seven zero zero one" reads "7001",
never "7000": the test can fail when the wrong digits are spoken.
"""

from __future__ import annotations

import cmath
import io
import math
import wave
from collections.abc import Mapping, Sequence

from callpark.model import prompts as model

RATE = 8000
FRAME = 160  # 20 ms
FFT = 256
BANDS = 16  # 200 .. 3400 Hz, 200 Hz each
DYNAMIC_RANGE_DB = 40
_HANN = [0.5 - 0.5 * math.cos(2 * math.pi * n / (FRAME - 1)) for n in range(FRAME)]
_TWIDDLE = [cmath.exp(-2j * math.pi * k / FFT) for k in range(FFT // 2)]
_BAND_BINS = [range(round((200 + 200 * b) * FFT / RATE), round((400 + 200 * b) * FFT / RATE)) for b in range(BANDS)]
CHARACTERS = [n for n in model.PROMPT_NAMES if n != model.WORDING]
GAP_FRAMES = round(model.GAP_S * RATE / FRAME)


def samples_of(wav: bytes) -> list[int]:
    """The 16-bit mono samples of a WAV (8 kHz)."""
    with wave.open(io.BytesIO(wav), "rb") as w:
        assert w.getframerate() == RATE and w.getsampwidth() == 2 and w.getnchannels() == 1
        raw = w.readframes(w.getnframes())
    return [int.from_bytes(raw[i : i + 2], "little", signed=True) for i in range(0, len(raw) - 1, 2)]


def _fft(x: list[complex]) -> list[complex]:
    """Radix-2 FFT of ``FFT`` points (iterative, in place)."""
    n = len(x)
    j = 0
    for i in range(1, n):
        bit = n >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j |= bit
        if i < j:
            x[i], x[j] = x[j], x[i]
    size = 2
    while size <= n:
        step = n // size
        half = size // 2
        for start in range(0, n, size):
            for k in range(half):
                t = _TWIDDLE[k * step] * x[start + k + half]
                x[start + k + half] = x[start + k] - t
                x[start + k] += t
        size *= 2
    return x


def features(samples: Sequence[int]) -> list[list[float]]:
    """One vector of log band energies per 20 ms frame (Hann window, 256-point FFT)."""
    out = []
    pad = [0j] * (FFT - FRAME)
    for start in range(0, len(samples) - FRAME + 1, FRAME):
        frame = [complex(x * w) for x, w in zip(samples[start : start + FRAME], _HANN, strict=True)]
        spectrum = _fft(frame + pad)
        power = [abs(v) ** 2 for v in spectrum[: FFT // 2]]
        out.append([math.log10(1.0 + sum(power[k] for k in bins)) for bins in _BAND_BINS])
    # 40 dB below the loudest band of the whole sound is silence, whatever the noise floor
    floor = max((max(f) for f in out), default=0.0) - DYNAMIC_RANGE_DB / 10
    return [[max(v, floor) for v in f] for f in out]


def _ncc(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> float:
    """Normalised correlation of two equally long feature sequences (flattened)."""
    xs = [v for frame in a for v in frame]
    ys = [v for frame in b for v in frame]
    if len(xs) != len(ys) or not xs:
        return -1.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else -1.0


def _best_lag(heard: list[list[float]], expected: list[list[float]], lags: range) -> tuple[int, float]:
    """The frame offset of ``expected`` in ``heard`` (negative: the recording started late)."""
    best = (0, -2.0)
    for lag in lags:
        lo = max(0, -lag)
        hi = min(len(expected), len(heard) - lag)
        if hi - lo < len(expected) // 2:
            continue
        score = _ncc(expected[lo:hi], heard[lo + lag : hi + lag])
        if score > best[1]:
            best = (lag, score)
    return best


def spoken_orbit(recording: bytes, length: int, prompts: Mapping[str, bytes]) -> tuple[str, float]:
    """The ``length``-character orbit the recording announces, and how well the wording matched.

    The wording ("parked on") is found first; then each character, one slot after the
    other: every candidate prompt (followed by the silence of the gap, so that a short word
    does not match the start of a longer one) is tried around where the slot starts, the best
    is what was said, and the next slot starts after it.
    """
    heard = features(samples_of(recording))
    heard += [[min(min(f) for f in heard)] * BANDS] * (GAP_FRAMES + 4)  # the end of a recording is silence
    lead = round(model.LEAD_IN_S * RATE / FRAME)
    wording = features(samples_of(model.render([model.WORDING], prompts)))[lead:]
    lag, score = _best_lag(heard, wording, range(-lead, max(1, len(heard) - len(wording))))
    candidates = {n: features(samples_of(model.render([n], prompts)))[lead:] for n in CHARACTERS}
    at = lag + len(wording) + GAP_FRAMES
    said = []
    for _ in range(length):
        best = ("?", -2.0, at)
        for name, words in candidates.items():
            template = words + [[min(min(f) for f in words)] * BANDS] * GAP_FRAMES
            for jitter in range(-3, 4):
                pos = at + jitter
                if pos < 0 or pos + len(template) > len(heard):
                    continue
                s = _ncc(template, heard[pos : pos + len(template)])
                if s > best[1]:
                    best = (name, s, pos)
        said.append({"star": "*", "pound": "#"}.get(best[0], best[0]))
        at = best[2] + len(candidates.get(best[0], [])) + GAP_FRAMES
    return "".join(said), score
