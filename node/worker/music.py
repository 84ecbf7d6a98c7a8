"""Music on hold of the worker: one looping WAV player and the conference-bridge connections."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pjsua2 as pj

if TYPE_CHECKING:
    from callpark.node.worker.calls import WorkerCall

log = logging.getLogger("callpark.node.worker")


class HoldMusic:
    """The music player, which calls want it (``wanted``) and the players that must outlive it.

    ``media`` holds every player and is handed to ``SipEndpoint.shutdown`` (players go before
    ``libDestroy``). A replaced player is kept there (``old<n>``, numbered from ``handles``)
    rather than destroyed while calls may still be connected to it.
    """

    def __init__(self, path: str | None, handles: Iterator[int]) -> None:
        self.path = path
        self.media: dict[str, Any] = {}
        self.wanted: dict[str, bool] = {}  # call handle -> play music while it is held
        self.homes: dict[str, str] = {}  # call handle -> its home pool's music, when not ``path``
        self._handles = handles

    def load(self, path: str, held: Iterable[WorkerCall]) -> None:
        """Play ``path`` from now on, also to the ``held`` calls whose audio is up and want it."""
        if not Path(path).exists():
            log.error("music file %s does not exist", path)
            return
        player = pj.AudioMediaPlayer()
        player.createPlayer(path, 0)
        old = self.media.get("music")
        self.media["music"] = player
        self.path = path
        for call in held:
            if call.media_up and self.wanted.get(call.handle, True):
                self.start(call)
        if old is not None:
            self.media[f"old{next(self._handles)}"] = old

    def start(self, call: WorkerCall) -> None:
        """Send the music to ``call`` (nothing without a player)."""
        self._transmit(call, start=True)

    def stop(self, call: WorkerCall) -> None:
        """Stop sending the music to ``call``."""
        self._transmit(call, start=False)

    def _transmit(self, call: WorkerCall, *, start: bool) -> None:
        player = self._player_for(call.handle)
        if player is None:
            return
        with contextlib.suppress(pj.Error):
            media = call.getAudioMedia(-1)
            if start:
                player.startTransmit(media)
            else:
                player.stopTransmit(media)

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


def connect_audio(a: WorkerCall, b: WorkerCall) -> None:
    """Connect two calls' audio both ways in the conference bridge (a bridged retrieval)."""
    with contextlib.suppress(pj.Error):
        am, bm = a.getAudioMedia(-1), b.getAudioMedia(-1)
        am.startTransmit(bm)
        bm.startTransmit(am)
