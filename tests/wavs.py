"""Builders of good and bad WAV files for the music tests."""

from __future__ import annotations

import io
import math
import struct
import wave


def pcm_wav(rate: int = 8000, seconds: float = 1.0, channels: int = 1, width: int = 2, freq: float = 440.0) -> bytes:
    frames = int(rate * seconds)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        data = bytearray()
        for i in range(frames):
            v = int(8000 * math.sin(2 * math.pi * freq * i / rate))
            sample = (
                struct.pack("<h", v)
                if width == 2
                else (struct.pack("<B", (v >> 8) + 128) if width == 1 else struct.pack("<i", v << 16)[:width])
            )
            data += sample * channels
        w.writeframes(bytes(data))
    return out.getvalue()


def with_format_tag(data: bytes, tag: int) -> bytes:
    """Rewrite the fmt chunk's format tag (e.g. 3 = IEEE float, 6 = A-law)."""
    pos = data.index(b"fmt ") + 8
    return data[:pos] + struct.pack("<H", tag) + data[pos + 2 :]
