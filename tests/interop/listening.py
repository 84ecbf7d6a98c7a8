"""Listen to a call through a pjsua2 phone and look for a tone (waits for a complete WAV).

The softphone answers ``record`` as soon as it drops its recorder, but pjsua 2.15
removes conference ports asynchronously (in the media clock), so the WAV header and
data can land a little later: the file is read only once it parses as a WAV holding
(almost) the requested length.
"""

from __future__ import annotations

import struct
import wave
from pathlib import Path

from callpark import audio
from callpark.lab.phone import Phone
from callpark.waiting import wait_until


def complete_wav(path: Path, seconds: float) -> bool:
    try:
        rate, samples = audio.read_wav(path)
    except (wave.Error, EOFError, OSError, ValueError, struct.error):
        return False
    return len(samples) >= 0.9 * seconds * rate


def listen_for(phone: Phone, call: str, freq_hz: float, seconds: float = 1.0) -> audio.ToneReport:
    """Record ``seconds`` of ``call`` on ``phone`` and analyse it for ``freq_hz`` (first 0.2 s skipped)."""
    path = phone.record(call, seconds)
    wait_until(lambda: complete_wav(path, seconds), timeout=3, what=f"{path.name} written")
    return audio.analyse_tone(path, freq_hz, skip_s=0.2)
