"""Music on hold of the worker: one looping WAV player and the conference-bridge connections."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pjsua2 as pj

if TYPE_CHECKING:
    from callpark.node.worker.calls import WorkerCall

log = logging.getLogger("callpark.node.worker")


class HoldMusic:
    """The music player and which calls want it (``wanted``).

    ``media`` holds the one player and is handed to ``SipEndpoint.shutdown`` (players go
    before ``libDestroy``). A replaced player is disconnected from the held calls and freed
    at once (its conference port goes with it); it used to be kept until the worker stopped,
    one player per music change.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.media: dict[str, Any] = {}
        self.wanted: dict[str, bool] = {}  # call handle -> play music while it is held
        self.homes: dict[str, str] = {}  # call handle -> its home pool's music, when not ``path``

    def load(self, path: str, held: Iterable[WorkerCall]) -> None:
        """Play ``path`` from now on, also to the ``held`` calls whose audio is up and want it."""
        if not Path(path).exists():
            log.error("music file %s does not exist", path)
            return
        player = pj.AudioMediaPlayer()
        player.createPlayer(path, 0)
        calls = list(held)
        old = self.media.get("music")
        if old is not None:
            for call in calls:
                _connect(old, call, start=False)
        self.media["music"] = player
        self.path = path
        for call in calls:
            if call.media_up and self.wanted.get(call.handle, True):
                self.start(call)
        del old  # the last reference: pjsua2 destroys the player and removes its port

    def start(self, call: WorkerCall) -> None:
        """Send the music to ``call`` (nothing without a player)."""
        self._transmit(call, start=True)

    def stop(self, call: WorkerCall) -> None:
        """Stop sending the music to ``call``."""
        self._transmit(call, start=False)

    def _transmit(self, call: WorkerCall, *, start: bool) -> None:
        player = self._player_for(call.handle)
        if player is not None:
            _connect(player, call, start=start)

    # -- music follows the call: a call parked on another pool's orbit hears that pool's music --

    def follow(self, handle: str, path: str | None) -> None:
        """Play ``path`` (the music of the pool the call's orbit belongs to) to the call ``handle``."""
        if path:
            self.homes[handle] = path

    def _player_for(self, handle: str) -> Any:
        """The call's home pool's player (one per file, made on first use), else ours."""
        path = self.homes.get(handle)
        if path is None or path == self.path:
            return self.media.get("music")
        key = f"home:{path}"
        if key not in self.media:
            if not Path(path).exists():
                log.error("music file %s does not exist", path)
                return self.media.get("music")
            player = pj.AudioMediaPlayer()
            player.createPlayer(path, 0)
            self.media[key] = player
        return self.media[key]


def _connect(player: Any, call: WorkerCall, *, start: bool) -> None:
    """Start or stop sending ``player`` to ``call`` (a call without audio is skipped)."""
    with contextlib.suppress(pj.Error):
        media = call.getAudioMedia(-1)
        if start:
            player.startTransmit(media)
        else:
            player.stopTransmit(media)


def connect_audio(a: WorkerCall, b: WorkerCall) -> None:
    """Connect two calls' audio both ways in the conference bridge (a bridged retrieval)."""
    with contextlib.suppress(pj.Error):
        am, bm = a.getAudioMedia(-1), b.getAudioMedia(-1)
        am.startTransmit(bm)
        bm.startTransmit(am)
