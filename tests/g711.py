"""G.711 for tests: decode PCMU/PCMA RTP payloads with two 256-entry tables (ITU-T G.711),
and turn RTP packets caught on a socket into a 16-bit WAV (no ``audioop``: deprecated)."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterable

PCMU, PCMA = 0, 8
RATE = 8000


def _ulaw(byte: int) -> int:
    u = ~byte & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    return 0x84 - magnitude if u & 0x80 else magnitude - 0x84


def _alaw(byte: int) -> int:
    a = byte ^ 0x55
    segment = (a >> 4) & 0x07
    magnitude = ((a & 0x0F) << 4) + (8 if segment == 0 else 0x108)
    if segment > 1:
        magnitude <<= segment - 1
    return magnitude if a & 0x80 else -magnitude


TABLES = {PCMU: [_ulaw(b) for b in range(256)], PCMA: [_alaw(b) for b in range(256)]}


def decode(payload_type: int, payload: bytes) -> list[int]:
    """The 16-bit samples of one G.711 payload (``payload_type`` 0 PCMU or 8 PCMA)."""
    table = TABLES[payload_type]
    return [table[b] for b in payload]


def rtp_parts(packet: bytes) -> tuple[int, int, bytes]:
    """``(payload type, timestamp, payload)`` of one RTP packet (RFC 3550: CSRCs, extension, padding).

    :raises ValueError: for a packet that is not RTP version 2 or is cut short.
    """
    if len(packet) < 12 or packet[0] >> 6 != 2:
        raise ValueError("not an RTP v2 packet")
    start = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:  # header extension: 4 bytes, then its length in 32-bit words
        if len(packet) < start + 4:
            raise ValueError("RTP header extension cut short")
        start += 4 + 4 * int.from_bytes(packet[start + 2 : start + 4], "big")
    end = len(packet) - (packet[-1] if packet[0] & 0x20 else 0)
    if start > end:
        raise ValueError("RTP packet cut short")
    return packet[1] & 0x7F, int.from_bytes(packet[4:8], "big"), packet[start:end]


def wav_of_rtp(packets: Iterable[bytes]) -> tuple[bytes, set[int]]:
    """A mono 8 kHz WAV of the G.711 packets, each placed at its RTP timestamp (gaps: silence),
    and the payload types seen (other payload types, e.g. comfort noise, are left out)."""
    samples: dict[int, int] = {}
    types: set[int] = set()
    first: int | None = None
    for packet in packets:
        payload_type, timestamp, payload = rtp_parts(packet)
        types.add(payload_type)
        if payload_type not in TABLES:
            continue
        first = timestamp if first is None else first
        at = (timestamp - first) % 2**32
        for i, sample in enumerate(decode(payload_type, payload)):
            samples[at + i] = sample
    length = max(samples) + 1 if samples else 0
    raw = b"".join(samples.get(i, 0).to_bytes(2, "little", signed=True) for i in range(length))
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(raw)
    return out.getvalue(), types
