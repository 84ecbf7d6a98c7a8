"""Two real phone processes calling each other directly over loopback (no registrar)."""

from __future__ import annotations

import pytest

from callpark import audio
from callpark.lab.phone import PhoneError
from tests.sip.helpers import PhoneFactory, connect


def test_direct_call_tone_and_hangup(make_phone: PhoneFactory) -> None:
    alice = make_phone("alice")
    bob = make_phone("bob", auto_answer=True)
    a_call, b_call = connect(alice, bob, headers={"X-Hello": "world"})

    incoming = bob.wait_for("incoming", call=b_call)
    assert incoming["x_headers"] == {"X-Hello": "world"}
    assert incoming["supports_replaces"] is True
    assert incoming["remote_contact"].endswith(f":{alice.sip_port};ob>")

    # Dialog tags are learnt on both sides and mirror each other.
    a_info, b_info = alice.call_info(a_call), bob.call_info(b_call)
    assert a_info["call_id"] == b_info["call_id"]
    assert a_info["local_tag"] and a_info["remote_tag"]
    assert (a_info["local_tag"], a_info["remote_tag"]) == (b_info["remote_tag"], b_info["local_tag"])

    # Audio both ways: each side plays its own tone; each hears only the other's.
    alice.play_tone(a_call, 1000)
    bob.play_tone(b_call, 600)
    heard_by_bob = bob.record(b_call, 0.8)
    heard_by_alice = alice.record(a_call, 0.8)
    bob_report = audio.analyse_tone(heard_by_bob, 1000, skip_s=0.1)
    assert bob_report.present(min_presence=0.8), bob_report
    assert bob_report.level > 0.3, bob_report
    assert not audio.tone_present(heard_by_bob, 600)
    assert audio.tone_present(heard_by_alice, 600, min_presence=0.8, skip_s=0.1)
    assert not audio.tone_present(heard_by_alice, 1000)

    since_a, since_b = alice.mark(), bob.mark()
    alice.hangup(a_call)
    assert bob.wait_state(b_call, "DISCONNECTED", since=since_b)["code"] == 200
    alice.wait_state(a_call, "DISCONNECTED", since=since_a)
    assert alice.calls() == [] and bob.calls() == []
    with pytest.raises(PhoneError, match="DISCONNECTED"):
        alice.hangup(a_call)


def test_answer_headers_reject_and_message(make_phone: PhoneFactory) -> None:
    alice = make_phone("alice")
    bob = make_phone("bob")

    # A custom header of the 200 OK is readable by the caller.
    since_b = bob.mark()
    a_call = alice.call(bob.uri)
    b_call = bob.wait_incoming(since=since_b)
    bob.answer(b_call, headers={"X-Callpark-Orbit": "7001"})
    confirmed = alice.wait_state(a_call, "CONFIRMED")
    assert confirmed["x_headers"] == {"X-Callpark-Orbit": "7001"}
    assert alice.received_header(a_call, "X-Callpark-Orbit") == "7001"
    assert bob.received_header(b_call, "From", which="invite") is not None
    bob.hangup(b_call)
    alice.wait_state(a_call, "DISCONNECTED")

    # A rejected call ends with the code we chose.
    since_a, since_b = alice.mark(), bob.mark()
    a_call = alice.call(bob.uri)
    b_call = bob.wait_incoming(since=since_b)
    bob.reject(b_call, 486)
    assert alice.wait_state(a_call, "DISCONNECTED", since=since_a)["code"] == 486

    # Out-of-dialog MESSAGE (how the park service tells a parker the orbit).
    alice.send_message(bob.uri, "Call parked on orbit 7001", content_type="text/plain")
    event = bob.wait_for("message", since=since_b)
    assert event["body"] == "Call parked on orbit 7001" and event["content_type"] == "text/plain"
    assert event["from"].startswith("<sip:alice@127.0.0.1")
    assert [m["body"] for m in bob.messages()] == ["Call parked on orbit 7001"]
    alice.wait_event(lambda e: e["event"] == "message_status" and e["code"] == 200)


def test_dtmf_and_protocol_errors(make_phone: PhoneFactory) -> None:
    alice = make_phone("alice")
    bob = make_phone("bob", auto_answer=True)
    a_call, b_call = connect(alice, bob)
    # One digit at a time: back-to-back RFC 2833 events were lost under CPU load (the sender's
    # media clock starves), which is pjmedia's timing, not the phone's protocol under test.
    for digit in "12#":
        since = bob.mark()
        alice.send_dtmf(a_call, digit)
        bob.wait_for("dtmf", call=b_call, digit=digit, since=since)

    assert alice.command("ping")["pong"] is True
    with pytest.raises(PhoneError, match="unknown command"):
        alice.command("fly")
    with pytest.raises(PhoneError, match="no live call"):
        alice.answer("c999")
    with pytest.raises(PhoneError, match="no registrar"):
        alice.command("register")
    with pytest.raises(PhoneError):
        alice.call("not a uri")
    assert alice.command("status")["calls"] == 1


def test_stop_with_live_calls_exits_cleanly(make_phone: PhoneFactory) -> None:
    """A phone stopped mid-call hangs up, destroys pjsua and exits 0 (no abort)."""
    alice = make_phone("alice")
    bob = make_phone("bob", auto_answer=True)
    carol = make_phone("carol", auto_answer=True)
    a1, b1 = connect(alice, bob)
    _a2, c1 = connect(alice, carol)
    alice.play_tone(a1, 800)
    since_b, since_c = bob.mark(), carol.mark()
    assert alice.stop() == 0
    assert alice.events("stopped")
    bob.wait_state(b1, "DISCONNECTED", since=since_b)
    carol.wait_state(c1, "DISCONNECTED", since=since_c)
    # SIGTERM is graceful too.
    bob.process.signal(15)
    bob.stop()
    assert bob.exit_code == 0 and bob.events("stopped")


def test_default_pjsua_tuning_also_works(make_phone: PhoneFactory) -> None:
    """The untuned media config (speex first, 16 kHz bridge, worker threads) still talks."""
    alice = make_phone("alice", tuning="default")
    bob = make_phone("bob", tuning="default", auto_answer=True)
    a_call, b_call = connect(alice, bob)
    alice.play_tone(a_call, 1200)
    assert audio.tone_present(bob.record(b_call, 0.6), 1200, min_presence=0.6, skip_s=0.1)


def test_sendonly_answer_and_stdin_eof(make_phone: PhoneFactory) -> None:
    """Answering sendonly (how park workers answer): the caller hears us, we hear nothing."""
    alice = make_phone("alice")
    bob = make_phone("bob")
    since_a, since_b = alice.mark(), bob.mark()
    a_call = alice.call(bob.uri)
    b_call = bob.wait_incoming(since=since_b)
    bob.answer(b_call, sendonly=True)
    b_media = bob.wait_for("media_state", call=b_call, active=True, since=since_b)
    a_media = alice.wait_for("media_state", call=a_call, active=True, since=since_a)
    assert (b_media["status"], b_media["dir"]) == ("LOCAL_HOLD", 1)  # ENCODING only
    assert (a_media["status"], a_media["dir"]) == ("REMOTE_HOLD", 2)  # DECODING only: "held"
    bob.play_tone(b_call, 500)
    alice.play_tone(a_call, 1500)
    assert audio.tone_present(alice.record(a_call, 0.6), 500, min_presence=0.8, skip_s=0.1)
    assert not audio.tone_present(bob.record(b_call, 0.4), 1500)

    # Closing the phone's stdin (its parent went away) is a graceful stop too.
    stdin = alice.process.popen.stdin
    assert stdin is not None
    stdin.close()
    alice.wait_for("stopped")
    bob.wait_state(b_call, "DISCONNECTED", since=since_b)
    assert alice.stop() == 0
