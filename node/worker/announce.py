"""Spoken announcements of the worker: "parked on seven zero zero one", played once to a call.

The supervisor renders the announcement (a WAV in the node's run directory) and names it
in the park ``answer`` (attended park: the parker hears it before it transfers the
caller) or in an ``announce`` command (blind park, when the deployment calls the parker
back). The worker plays it once (a non-looping player per call) and, when it has played,
hands the call to the music on hold, or hangs up a call-back. Ends are timed from the
file's length on the pump thread (no pjsua2 callback from the media thread).
"""

from __future__ import annotations

import contextlib
import logging
import time
import wave
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pjsua2 as pj

if TYPE_CHECKING:
    from callpark.node.worker.calls import WorkerCall

log = logging.getLogger("callpark.node.worker")

TAIL_S = 0.3  # after the last word, before the music starts or the call-back hangs up


@dataclass
class _Playing:
    call: WorkerCall
    player: Any
    ends_at: float


class Announcer:
    """Which calls get an announcement (``wanted``), and the ones playing it now (pump thread only)."""

    def __init__(self) -> None:
        self.wanted: dict[str, str] = {}  # call handle -> announcement WAV, not yet played
        self.playing: dict[str, _Playing] = {}

    def want(self, handle: str, path: str | None) -> None:
        """Play ``path`` to the call ``handle`` once its audio is up."""
        if path:
            self.wanted[handle] = path

    def busy(self, handle: str) -> bool:
        """True while the call waits for or plays its announcement (no music meanwhile)."""
        return handle in self.wanted or handle in self.playing

    def start(self, call: WorkerCall) -> bool:
        """Start the call's announcement (its audio is up); False when it has none to play."""
        path = self.wanted.pop(call.handle, None)
        if path is None:
            return False
        try:
            with wave.open(path, "rb") as w:
                seconds = w.getnframes() / w.getframerate()
            player = pj.AudioMediaPlayer()
            player.createPlayer(path, pj.PJMEDIA_FILE_NO_LOOP)
            player.startTransmit(call.getAudioMedia(-1))
        except (OSError, EOFError, wave.Error, pj.Error) as exc:
            log.warning("announcement %s not played: %s", path, exc)
            return False
        self.playing[call.handle] = _Playing(call, player, time.monotonic() + seconds + TAIL_S)
        return True

    def finished(self) -> list[str]:
        """The calls whose announcement has played; their players are dropped."""
        now = time.monotonic()
        done = [h for h, p in self.playing.items() if p.ends_at <= now]
        for handle in done:
            self.forget(handle)
        return done

    def forget(self, handle: str) -> None:
        """The call ended (or its announcement played): drop what it had here."""
        self.wanted.pop(handle, None)
        playing = self.playing.pop(handle, None)
        if playing is not None:
            # stop sending before the player goes (destroying it removes its conference port)
            with contextlib.suppress(pj.Error):
                playing.player.stopTransmit(playing.call.getAudioMedia(-1))
