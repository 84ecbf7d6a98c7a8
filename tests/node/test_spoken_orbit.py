"""The spoken orbit: an attended parker hears "parked on <orbit>" before it transfers the caller.

Real etcd, a real node, real pjsua2 phones: the parker's recording of its call to the park
number is read back with :mod:`tests.spoken` (template matching against the prompt audio),
so a wrong digit fails the test.
"""

from __future__ import annotations

from pathlib import Path

from callpark.lab.phone.flows import blind_park, call_and_answer
from callpark.model import prompts
from callpark.store import prompts as promptstore
from callpark.waiting import wait_until
from tests.node.conftest import POOL, ParkLab
from tests.spoken import spoken_orbit
from tests.wavs import pcm_wav

RECORD_S = 5.0  # the lead-in, "parked on" and four digits take about 3.5 s
NO_RINGBACK = "00:05:00"  # no ringback may hand the call over while a test looks at it


def test_the_matcher_reads_the_digits_and_tells_a_wrong_orbit_apart() -> None:
    """The negative check of the reader itself: "7001" is never read as "7000"."""
    shipped = promptstore.shipped()
    for orbit in ("7001", "7000", "#90"):
        said, match = spoken_orbit(prompts.render(prompts.announcement(orbit), shipped), len(orbit), shipped)
        assert said == orbit and match > 0.9, (orbit, said, match)


def attended_park_heard(lab: ParkLab, parker_name: str, caller_name: str) -> tuple[str, bytes]:
    """``parker_name`` calls ``caller_name``, calls park, records what it hears, then completes
    the attended transfer; returns the orbit the answer named and the recording."""
    parker, caller = lab.phone(parker_name), lab.phone(caller_name, auto_answer=True)
    node = lab.nodes[0]
    to_caller = call_and_answer(parker, caller)
    to_park = call_and_answer(parker, caller, node.park_uri())
    orbit = parker.received_header(to_park, "X-Callpark-Orbit")
    assert orbit
    heard = parker.record(to_park, RECORD_S).read_bytes()
    parker.attended_transfer(to_caller, to_park)
    wait_until(
        lambda: any(f"{caller_name}@" in r["caller_uri"] and r["orbit"] == orbit for r in lab.parked().values()),
        timeout=10,
        what=f"{caller_name} parked on {orbit} after the transfer",
    )
    return orbit, heard


def test_an_attended_parker_hears_the_orbit_then_the_call_is_parked_there(lab: ParkLab) -> None:
    lab.configure(timeout=NO_RINGBACK)
    lab.node()
    shipped = promptstore.shipped()
    orbit, heard = attended_park_heard(lab, "parker", "alice")
    said, match = spoken_orbit(heard, len(orbit), shipped)
    assert match > 0.7, f"'parked on' not found in the parker's recording (match {match:.2f})"
    assert (said, orbit) == ("7000", "7000")
    # a second park gets another orbit, and the parker hears that one, not the first
    orbit2, heard2 = attended_park_heard(lab, "parker2", "bob")
    said2, _ = spoken_orbit(heard2, len(orbit2), shipped)
    assert orbit2 != orbit and said2 == orbit2, (orbit2, said2)


def test_a_pool_speaks_the_prompts_its_admin_set(lab: ParkLab, tmp_path: Path) -> None:
    lab.configure(timeout=NO_RINGBACK)
    wording = pcm_wav(rate=8000, seconds=0.6, freq=700)  # the admin's own "parked on": a tone
    promptstore.set_prompt(lab.store, POOL, "parked-on", wording)
    lab.node()
    orbit, heard = attended_park_heard(lab, "parker", "alice")
    mine = {**promptstore.shipped(), "parked-on": wording}
    said, match = spoken_orbit(heard, len(orbit), mine)
    assert match > 0.7 and said == orbit, (said, match)
    _, shipped_match = spoken_orbit(heard, len(orbit), promptstore.shipped())
    assert shipped_match < match - 0.2, "the shipped wording must not be what was heard"


def test_a_blind_parker_reads_the_orbit_in_the_notify_and_is_called_back_with_it(lab: ParkLab) -> None:
    """--announce-blind (ParkAndAnnounce): the node calls the blind parker, speaks, hangs up."""
    lab.configure(timeout=NO_RINGBACK)
    node = lab.node(extra=["--announce-blind"])
    parker, alice = lab.phone("parker", auto_answer=True), lab.phone("alice", auto_answer=True)
    since = parker.mark()
    blind_park(parker, alice, node.park_uri())
    record = lab.wait_parked("alice")
    # the park's 200 names the orbit in its reason phrase; a transferee that copies it into the
    # REFER's final NOTIFY tells the parker there (pjsua and baresip write the standard "OK")
    answered = alice.wait_event(
        lambda e: e["event"] == "call_state" and e["state"] == "CONFIRMED" and "park@" in e["remote_uri"],
        since=0,
        timeout=10,
        what="alice's park call confirmed",
    )
    assert answered["reason"] == f"Parked on {record['orbit']}", answered
    incoming = parker.wait_event(
        lambda e: e["event"] == "incoming" and e["x_headers"].get("X-Callpark-Announce") == "1",
        since=since,
        timeout=10,
        what="the node calling the parker back",
    )
    assert incoming["x_headers"].get("X-Callpark-Orbit") == record["orbit"]
    parker.wait_for("call_state", call=incoming["call"], state="CONFIRMED", since=since, timeout=10)
    heard = parker.record(incoming["call"], RECORD_S).read_bytes()
    said, match = spoken_orbit(heard, len(record["orbit"]), promptstore.shipped())
    assert match > 0.7 and said == record["orbit"], (said, match)
    parker.wait_for("call_state", call=incoming["call"], state="DISCONNECTED", since=since, timeout=10)
    assert lab.parked()[record["orbit"]]["park_id"] == record["park_id"], "the call stays parked"
