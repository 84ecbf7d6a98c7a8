"""The music on hold changes while a caller is parked: the caller hears only the new music, and
the replaced player is freed (real etcd, a real node, a real phone; the freeing itself is
counted in tests/node/test_worker_state.py)."""

from __future__ import annotations

from functools import partial

from callpark.lab.phone.flows import MUSIC_NOTES_HZ, blind_park, hears, hears_music, tone_presence
from callpark.store import music as mohstore
from callpark.waiting import wait_until
from tests.node.conftest import POOL, ParkLab
from tests.wavs import pcm_wav


def test_a_caller_parked_across_music_changes_hears_only_the_current_music(lab: ParkLab) -> None:
    lab.configure(timeout="00:02:00")  # no ringback during the test
    node = lab.node()
    parker, alice = lab.phone("parker"), lab.phone("alice", auto_answer=True)
    blind_park(parker, alice, node.park_uri())
    lab.wait_parked("alice")
    a_call = wait_until(
        lambda: next((c["call"] for c in alice.calls() if c["state"] == "CONFIRMED"), None),
        timeout=10,
        what="alice's parked call",
    )
    assert hears_music(alice, a_call)
    for freq in (1000.0, 600.0):  # two changes: two players replaced
        mohstore.upload(lab.admin, POOL, pcm_wav(rate=8000, seconds=4.0, freq=freq), f"tone{int(freq)}.wav")
        new = f"alice hearing the new {freq:.0f} Hz music"
        wait_until(partial(hears, alice, a_call, freq), timeout=20, what=new)
    assert tone_presence(alice, a_call, [*MUSIC_NOTES_HZ, 1000.0]) < 0.3, "a replaced player still plays to alice"
    assert node.process.is_running()
