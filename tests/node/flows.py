"""Call flows the node tests share: re-exported from :mod:`callpark.lab.phone.flows`."""

from callpark.lab.phone.flows import (
    MUSIC_NOTES_HZ,
    blind_park,
    call_and_answer,
    connected_call,
    hears,
    hears_music,
    park_probe,
    talking,
    tone_presence,
)

__all__ = [
    "MUSIC_NOTES_HZ",
    "blind_park",
    "call_and_answer",
    "connected_call",
    "hears",
    "hears_music",
    "park_probe",
    "talking",
    "tone_presence",
]
