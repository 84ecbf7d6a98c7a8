"""Helpers shared by the real-process SIP tests."""

from __future__ import annotations

from collections.abc import Callable

from callpark import audio
from callpark.lab.phone import Phone

PhoneFactory = Callable[..., Phone]


def connect(caller: Phone, callee: Phone, headers: dict[str, str] | None = None) -> tuple[str, str]:
    """caller calls callee (which must auto-answer); returns both handles once media is up."""
    since_a, since_b = caller.mark(), callee.mark()
    a_call = caller.call(callee.uri, headers=headers)
    b_call = callee.wait_incoming(since=since_b)
    caller.wait_state(a_call, "CONFIRMED", since=since_a)
    callee.wait_state(b_call, "CONFIRMED", since=since_b)
    caller.wait_for("media_state", call=a_call, active=True, since=since_a)
    callee.wait_for("media_state", call=b_call, active=True, since=since_b)
    return a_call, b_call


def assert_talking(a: Phone, a_call: str, b: Phone, b_call: str, freq: float) -> None:
    """a plays ``freq`` on a_call and b hears it on b_call."""
    a.play_tone(a_call, freq)
    report = audio.analyse_tone(b.record(b_call, 0.6), freq, skip_s=0.1)
    assert report.present(min_presence=0.8), report
