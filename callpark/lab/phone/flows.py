"""Call flows on top of :class:`~callpark.lab.phone.Phone`, shared by tests, the demo and the drill."""

from __future__ import annotations

import functools
import time
from typing import Any

from callpark import audio
from callpark.lab.phone.harness import Phone
from callpark.model.music import DEFAULT_NOTES_HZ
from callpark.waiting import WaitTimeout, wait_until

MUSIC_NOTES_HZ = sorted(set(DEFAULT_NOTES_HZ))


def connected_call(phone: Phone, *, remote_contains: str | tuple[str, ...], timeout: float = 10.0) -> str:
    """The newest confirmed call of ``phone`` whose remote URI contains the text (any of them).

    After a takeover (INVITE with Replaces) the phone briefly lists both the replaced
    dialog and its successor; the successor has the higher handle.
    """
    texts = (remote_contains,) if isinstance(remote_contains, str) else remote_contains

    def find() -> str | None:
        found = [
            str(c["call"])
            for c in phone.calls()
            if c.get("state") == "CONFIRMED" and any(t in str(c.get("remote_uri", "")) for t in texts)
        ]
        return max(found, key=lambda h: int(h.lstrip("c")), default=None)

    return wait_until(find, timeout=timeout, what=f"{phone.user} connected to {remote_contains}")


def parked_call(phone: Phone, orbit: str, timeout: float = 10.0) -> str:
    """The parked caller's call to the park service: to ``park``, or, after a takeover, from
    ``orbit-<orbit>`` (a takeover's INVITE/Replaces comes from the orbit, see node/worker/calls.py)."""
    return connected_call(phone, remote_contains=("park@", f"orbit-{orbit}@"), timeout=timeout)


def call_and_answer(caller: Phone, callee: Phone, uri: str | None = None) -> str:
    """caller calls callee (auto-answering); returns the caller's handle once confirmed."""
    since = caller.mark()
    handle = caller.call(uri or callee.uri)
    caller.wait_state(handle, "CONFIRMED", since=since, timeout=10)
    return handle


def blind_park(parker: Phone, caller: Phone, park_uri: str, *, caller_uri: str | None = None) -> str:
    """parker talks to caller, then REFERs the caller to ``park_uri``; returns the parker's handle."""
    handle = call_and_answer(parker, caller, caller_uri)
    parker.blind_transfer(handle, park_uri)
    return handle


def tone_presence(listener: Phone, call: str, freqs: list[float], seconds: float = 0.8) -> float:
    """Share of a recording in which any of ``freqs`` is clearly audible (0..1)."""
    path = listener.record(call, seconds)
    return sum(audio.analyse_tone(path, f, skip_s=0.1).presence for f in freqs)


def hears(listener: Phone, call: str, freq: float, seconds: float = 0.8) -> bool:
    return tone_presence(listener, call, [freq], seconds) >= 0.6


def hears_music(listener: Phone, call: str, seconds: float = 1.6) -> bool:
    """Whether the default music on hold (an arpeggio) fills most of a recording."""
    return tone_presence(listener, call, MUSIC_NOTES_HZ, seconds) >= 0.6


def talking(a: Phone, a_call: str, b: Phone, b_call: str, freq: float = 1000.0) -> bool:
    """a plays a tone on a_call and b hears it on b_call."""
    a.play_tone(a_call, freq)
    try:
        return hears(b, b_call, freq)
    finally:
        a.stop_play(a_call)


def park_probe(phone: Phone, park_uri: str, deadline_s: float, attempts: list[dict[str, Any]] | None = None) -> float:
    """Call ``park_uri`` until one park succeeds; returns when (monotonic) it was answered.

    ``attempts``, when given, receives one entry per try: seconds taken, final state, SIP code.
    """
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        since = phone.mark()
        sent = time.monotonic()
        handle = phone.call(park_uri)
        event = phone.wait_event(
            functools.partial(_settled, handle),
            since=since,
            timeout=15,
            what="park probe answered",
        )
        if attempts is not None:
            took = round(time.monotonic() - sent, 3)
            attempts.append(
                {"took_s": took, "state": event["state"], "code": event.get("code"), "reason": event.get("reason")}
            )
        if event["state"] == "CONFIRMED":
            done = time.monotonic()
            phone.hangup(handle)
            return done
    raise WaitTimeout(f"no park succeeded within {deadline_s}s")


def _settled(handle: str, event: dict[str, Any]) -> bool:
    return bool(
        event["event"] == "call_state" and event["call"] == handle and event["state"] in ("CONFIRMED", "DISCONNECTED")
    )
