"""The worker's per-URI and per-request state is bounded (no pjsua endpoint needed)."""

from __future__ import annotations

import argparse
import gc
import types
from pathlib import Path
from typing import Any, cast

import pytest

from callpark.node.protocol import Channel
from callpark.node.worker import loop, music


class FakeBuddy:
    made: list[str] = []

    def create(self, _account: Any, cfg: Any) -> None:
        FakeBuddy.made.append(cfg.uri)

    def sendInstantMessage(self, _prm: Any) -> None:
        pass


class FakeParam:
    def __init__(self) -> None:
        self.txOption = types.SimpleNamespace(headers=[])


@pytest.fixture()
def worker(monkeypatch: pytest.MonkeyPatch) -> loop.Worker:
    """A real Worker (its endpoint is never started) whose pjsua Buddies are fakes."""
    fake_pj = types.SimpleNamespace(
        BuddyConfig=lambda: types.SimpleNamespace(uri="", subscribe=True),
        Buddy=FakeBuddy,
        SendInstantMessageParam=FakeParam,
    )
    monkeypatch.setattr(loop, "pj", fake_pj)
    monkeypatch.setattr(loop, "sip_header", lambda name, value: (name, value))
    FakeBuddy.made = []
    args = argparse.Namespace(
        index=0, node="n1", sip_port=5060, host="127.0.0.1", music=None, trusted_peers="127.0.0.0/8"
    )
    w = loop.Worker(args, cast(Channel, None))
    w.control.outgoing_account = lambda: None  # type: ignore[method-assign]
    return w


def test_buddies_are_bounded_and_the_least_recently_used_goes(worker: loop.Worker) -> None:
    for i in range(100):
        worker.notify(f"sip:parker{i}@example.test", "parked", {"orbit": "7001", "park_id": "x"})
        worker.notify("sip:frequent@example.test", "parked", {"orbit": "7001", "park_id": "x"})
    assert len(worker.buddies) == 64  # MAX_BUDDIES
    assert "sip:frequent@example.test" in worker.buddies  # used all along: never evicted
    assert "sip:parker0@example.test" not in worker.buddies
    assert "sip:parker99@example.test" in worker.buddies
    assert FakeBuddy.made.count("sip:frequent@example.test") == 1


def test_requests_never_answered_are_forgotten(worker: loop.Worker) -> None:
    for _ in range(500):
        worker._ask(types.SimpleNamespace())  # type: ignore[arg-type]
    assert len(worker.pending) <= 64  # MAX_PENDING


def test_the_lru_map_evicts_the_least_recently_used_and_says_so() -> None:
    from callpark.node.worker.lru import LruMap

    evicted: list[str] = []
    lru: LruMap[str, int] = LruMap(2, lambda k, _v: evicted.append(k))
    lru.get_or_create("a", lambda: 1)
    lru.get_or_create("b", lambda: 2)
    assert lru.get_or_create("a", lambda: 9) == 1  # used: now the newest
    lru.get_or_create("c", lambda: 3)
    assert evicted == ["b"] and "a" in lru and "c" in lru and len(lru) == 2


class FakePlayer:
    """A pjsua2 AudioMediaPlayer: counts the live ones and where each one sends."""

    alive: dict[int, set[str]] = {}  # id of a live player -> the call media it transmits to

    def __init__(self) -> None:
        FakePlayer.alive[id(self)] = set()

    def createPlayer(self, path: str, _options: int) -> None:
        self.path = path

    def startTransmit(self, media: str) -> None:
        FakePlayer.alive[id(self)].add(media)

    def stopTransmit(self, media: str) -> None:
        FakePlayer.alive[id(self)].discard(media)

    def __del__(self) -> None:
        FakePlayer.alive.pop(id(self), None)


def test_a_replaced_music_player_stops_sending_and_is_freed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(music, "pj", types.SimpleNamespace(AudioMediaPlayer=FakePlayer, Error=RuntimeError))
    FakePlayer.alive = {}
    held = types.SimpleNamespace(handle="c1", media_up=True, getAudioMedia=lambda _index: "alice-audio")
    hold = music.HoldMusic(None)
    for i in range(5):  # the music changed five times while alice was parked
        wav = tmp_path / f"moh{i}.wav"
        wav.write_bytes(b"RIFF")
        hold.load(str(wav), [cast(Any, held)])
    gc.collect()
    assert list(hold.media) == ["music"] and len(FakePlayer.alive) == 1, (hold.media, FakePlayer.alive)
    assert list(FakePlayer.alive.values()) == [{"alice-audio"}]  # alice hears only the current music


def test_per_call_worker_state_goes_when_the_calls_end() -> None:
    from callpark.node.worker.calls import CallControl
    from callpark.peers import TrustedPeers

    control = CallControl(
        lambda *_a, **_k: None, cast(Any, None), music.HoldMusic(None), TrustedPeers.parse("127.0.0.0/8"), iter(())
    )
    for i in range(100):  # a hundred calls parked one after another, each wanting music
        call = types.SimpleNamespace(handle=f"h{i}", state="CONFIRMED", getId=lambda i=i: i % 4)
        control.adopt(cast(Any, call))
        control.music.wanted[call.handle] = True
        call.state = "DISCONNECTED"
        control.bury()
    assert not control.calls and not control.music.wanted
    assert len(control.graveyard) <= 9  # ended objects are released once no live call has their id
