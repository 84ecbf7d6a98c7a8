"""Music on hold: WAV validation, the project's own default music, chunking for etcd.

Accepted: RIFF/WAVE, PCM (format 1, or WAVE_FORMAT_EXTENSIBLE with the PCM sub-format),
16-bit, mono, 8 to 48 kHz, at most :data:`MAX_MOH_BYTES`. Anything else is refused
with a one-line reason and the old music is kept.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import wave
from dataclasses import dataclass
from typing import Any

from callpark.errors import ValidationError
from callpark.model.fields import number, text, whole

MAX_MOH_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 256 * 1024  # well below etcd's 1.5 MiB request limit
MIN_RATE = 8_000
MAX_RATE = 48_000
_PCM_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"

# The default music: a calm arpeggio (C major), 8 kHz, 16-bit mono, generated here.
DEFAULT_RATE = 8_000
DEFAULT_NOTES_HZ = (523.25, 659.25, 783.99, 1046.50, 783.99, 659.25)
DEFAULT_NOTE_S = 0.5
DEFAULT_LOOPS = 3


@dataclass(frozen=True)
class WavInfo:
    """What a valid music file contains."""

    sample_rate: int
    frames: int
    size: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def validate_wav(data: bytes) -> WavInfo:
    """Check ``data`` is a WAV callpark can play; raise :class:`ValidationError` if not."""
    if len(data) > MAX_MOH_BYTES:
        raise ValidationError(
            "moh-size", f"music file is {len(data)} bytes; the limit is {MAX_MOH_BYTES} bytes (8 MiB)"
        )
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValidationError("moh-not-wav", "music file is not a WAV file (no RIFF/WAVE header)")
    riff_size = struct.unpack_from("<I", data, 4)[0]
    if riff_size + 8 > len(data):
        raise ValidationError(
            "moh-truncated",
            f"music file is truncated: header says {riff_size + 8} bytes, file has {len(data)}",
        )
    fmt: tuple[int, int, int, int] | None = None
    data_size: int | None = None
    pos = 12
    end = riff_size + 8
    while pos + 8 <= end:
        chunk_id = data[pos : pos + 4]
        (chunk_size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if body + chunk_size > end:
            raise ValidationError(
                "moh-truncated", f"music file is truncated inside its {chunk_id.decode('latin-1')!r} chunk"
            )
        if chunk_id == b"fmt ":
            if chunk_size < 16:
                raise ValidationError("moh-corrupt", "music file has a fmt chunk shorter than 16 bytes")
            tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == 0xFFFE:
                if chunk_size < 40 or data[body + 26 : body + 40] != _PCM_GUID_TAIL:
                    raise ValidationError("moh-codec", "music file is WAVE_FORMAT_EXTENSIBLE but not PCM")
                tag = struct.unpack_from("<H", data, body + 24)[0]
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            data_size = chunk_size
        pos = body + chunk_size + (chunk_size & 1)
    if fmt is None:
        raise ValidationError("moh-corrupt", "music file has no fmt chunk")
    tag, channels, rate, bits = fmt
    if tag != 1:
        raise ValidationError("moh-codec", f"music file codec is format {tag:#06x}; only PCM (1) is accepted")
    if channels != 1:
        raise ValidationError("moh-channels", f"music file has {channels} channels; only mono is accepted")
    if bits != 16:
        raise ValidationError("moh-bits", f"music file has {bits}-bit samples; only 16-bit is accepted")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise ValidationError("moh-rate", f"music file is {rate} Hz; 8000 to 48000 Hz is accepted")
    if data_size is None:
        raise ValidationError("moh-corrupt", "music file has no data chunk")
    if data_size < 2 * rate // 10:
        raise ValidationError("moh-empty", "music file holds less than 0.1 s of audio")
    return WavInfo(sample_rate=rate, frames=data_size // 2, size=len(data))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_chunks(data: bytes, chunk_bytes: int = CHUNK_BYTES) -> list[bytes]:
    return [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or [b""]


def default_music() -> bytes:
    """The project's own default music on hold, generated deterministically."""
    samples = bytearray()
    note_frames = int(DEFAULT_RATE * DEFAULT_NOTE_S)
    fade = DEFAULT_RATE // 50  # 20 ms fades avoid clicks between notes
    for _ in range(DEFAULT_LOOPS):
        for freq in DEFAULT_NOTES_HZ:
            for i in range(note_frames):
                envelope = min(1.0, i / fade, (note_frames - 1 - i) / fade)
                value = 0.3 * envelope * math.sin(2 * math.pi * freq * i / DEFAULT_RATE)
                samples += struct.pack("<h", round(value * 32767))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(DEFAULT_RATE)
        w.writeframes(bytes(samples))
    return out.getvalue()


@dataclass(frozen=True)
class MohMeta:
    """What etcd stores about a pool's music: where its chunks are and how to check them."""

    pool: str
    sha256: str
    size: int
    chunks: int
    sample_rate: int
    duration_s: float
    filename: str

    def to_json(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "sha256": self.sha256,
            "size": self.size,
            "chunks": self.chunks,
            "sample_rate": self.sample_rate,
            "duration_s": round(self.duration_s, 3),
            "filename": self.filename,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MohMeta:
        """Strict: raises ``ValueError`` on a missing or mistyped field."""
        sha = text(data, "sha256")
        if len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha):
            raise ValueError("sha256 must be 64 lower-case hex digits")
        size, chunks = whole(data, "size"), whole(data, "chunks", minimum=1)
        if size > MAX_MOH_BYTES or chunks > MAX_MOH_BYTES // CHUNK_BYTES + 1:
            raise ValueError("music size or chunk count is beyond the limits")
        return cls(
            pool=text(data, "pool"),
            sha256=sha,
            size=size,
            chunks=chunks,
            sample_rate=whole(data, "sample_rate", minimum=MIN_RATE),
            duration_s=number(data, "duration_s"),
            filename=text(data, "filename"),
        )
