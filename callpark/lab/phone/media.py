"""What the phone plays into and records from its calls, by call handle (main thread only)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pjsua2 as pj

from callpark.lab.phone.calls import Json, PhoneCall


class PhoneMedia:
    """Players and recorders attached to calls.

    A recording replies to its ``record`` command when it ends (``emit`` with the command's
    id): after its seconds (a timer from ``call_later``), or early when the call ends.
    """

    def __init__(self, emit: Callable[[Json], None], call_later: Callable[[float, Callable[[], None]], None]) -> None:
        self._emit = emit
        self._call_later = call_later
        self.players: dict[str, Any] = {}
        self.player_paths: dict[str, str] = {}
        self.recorders: dict[str, tuple[Any, str, Any, float]] = {}

    def play(self, call: PhoneCall, path: str, *, loop: bool) -> None:
        """Play the WAV at ``path`` into ``call`` (replaces what played before)."""
        am = call.getAudioMedia(-1)
        self.players.pop(call.handle, None)
        player = pj.AudioMediaPlayer()
        player.createPlayer(path, 0 if loop else pj.PJMEDIA_FILE_NO_LOOP)
        player.startTransmit(am)
        self.players[call.handle] = player
        self.player_paths[call.handle] = path

    def stop_play(self, handle: str) -> None:
        self.players.pop(handle, None)
        self.player_paths.pop(handle, None)

    def record(self, call: PhoneCall, path: str, seconds: float, cid: Any) -> None:
        """Record what we hear on ``call`` into ``path``; reply to command ``cid`` when done."""
        am = call.getAudioMedia(-1)
        rec = pj.AudioMediaRecorder()
        rec.createRecorder(path)
        am.startTransmit(rec)
        self.recorders[call.handle] = (rec, path, cid, time.monotonic())
        self._call_later(seconds, partial(self.finish_recording, call.handle))

    def finish_recording(self, handle: str, early: bool = False) -> None:
        entry = self.recorders.pop(handle, None)
        if entry is None:
            return
        path, cid, started = entry[1], entry[2], entry[3]
        del entry  # the last reference: destroying the recorder writes the WAV header
        self._emit(
            {
                "id": cid,
                "ok": True,
                "path": path,
                "seconds": round(time.monotonic() - started, 3),
                "complete": not early,
            }
        )

    def reconnect(self, call: PhoneCall) -> None:
        """Re-attach player/recorder after a media update (re-INVITE, replace)."""
        am = call.getAudioMedia(-1)
        player = self.players.get(call.handle)
        if player is not None:
            player.startTransmit(am)
        rec = self.recorders.get(call.handle)
        if rec is not None:
            am.startTransmit(rec[0])

    def stop(self, handle: str) -> None:
        """The call ended: drop its player, end its recording early."""
        self.stop_play(handle)
        if handle in self.recorders:
            self.finish_recording(handle, early=True)

    def close(self) -> None:
        """At shutdown: end every recording early and drop the players."""
        for handle in list(self.recorders):
            self.finish_recording(handle, early=True)
        self.players.clear()
