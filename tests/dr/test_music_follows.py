"""Music follows the call: after its pool is lost, a parked caller still hears its home pool's music."""

from __future__ import annotations

from callpark import audio
from callpark.lab.phone.flows import connected_call, parked_call
from callpark.waiting import wait_until
from tests.dr.conftest import DrLab

TONE_A_HZ = 700.0  # pool-a's music
TONE_B_HZ = 1300.0  # pool-b's music (neither is a note of the default music)


def tone_share(dr: DrLab, user: str, orbit: str, freq: float, *, directed: bool = False) -> float:
    """Share of a recording of ``user``'s parked call in which ``freq`` is audible."""
    caller = next(p for p in dr.phones if p.user == user)
    call = connected_call(caller, remote_contains=f"{orbit}@") if directed else parked_call(caller, orbit)
    path = caller.record(call, 1.6)
    return audio.analyse_tone(path, freq, skip_s=0.1).presence


def test_after_a_pool_kill_the_caller_hears_its_home_pools_music_not_the_backups(dr: DrLab) -> None:
    audio.write_tone(dr.root / "a.wav", TONE_A_HZ, 2.0)
    audio.write_tone(dr.root / "b.wav", TONE_B_HZ, 2.0)
    cluster = dr.start(a_nodes=1, b_nodes=1, extra='\n[moh]\n"pool-a" = "a.wav"\n"pool-b" = "b.wav"\n')
    parker, alice = dr.phone("parker"), dr.phone("alice", auto_answer=True)
    before = dr.park(parker, alice)
    orbit = before["orbit"]
    assert before["holder"]["node"] == "pool-a-n1" and orbit.startswith("70")
    assert tone_share(dr, "alice", orbit, TONE_A_HZ) > 0.6, "parked on pool-a: pool-a's music"
    cluster.nodes["pool-a"][0].kill9()

    def taken_over() -> bool:
        now = dr.parked().get(orbit)
        if now is None or now["holder"]["node"] != "pool-b-n1":
            return False
        return bool(now["dialog"]["call_id"] != before["dialog"]["call_id"])

    wait_until(taken_over, timeout=30, what="pool-b to take the call over")
    wait_until(
        lambda: tone_share(dr, "alice", orbit, TONE_A_HZ) > 0.6,
        timeout=10,
        what="alice to hear pool-a's music on pool-b",
    )
    assert tone_share(dr, "alice", orbit, TONE_B_HZ) < 0.2, "not the backup pool's music"
    # a call parked on pool-b's own range hears pool-b's music on the same node
    bob = dr.phone("bob", auto_answer=True)
    own = dr.park(parker, bob, target="7200")
    assert tone_share(dr, "bob", own["orbit"], TONE_B_HZ, directed=True) > 0.6
