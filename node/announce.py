"""The node's spoken announcements: one rendered WAV per orbit and prompt set, in the run directory.

:class:`AnnouncementFiles` renders "parked on <orbit>" from a pool's prompts
(:func:`callpark.model.prompts.render`) the first time it is needed and reuses the file
while the prompts are the same (the name is a hash of the words and the prompts' bytes).
At most ``limit`` files are kept; the oldest go first. Thread-safe (worker reader threads).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import wave
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

from callpark.errors import ValidationError
from callpark.model.prompts import announcement, render

log = logging.getLogger(__name__)


class AnnouncementFiles:
    """Rendered announcements under ``directory`` (created on first use)."""

    def __init__(self, directory: Path, limit: int = 256) -> None:
        self.directory = directory
        self.limit = limit
        self._lock = threading.Lock()
        self._files: OrderedDict[str, Path] = OrderedDict()

    def path(self, orbit: str, prompts: Mapping[str, bytes]) -> Path | None:
        """The WAV announcing ``orbit`` with ``prompts``; None (logged) when it cannot be made."""
        try:
            names = announcement(orbit)
            digest = hashlib.sha256("\0".join(names).encode())
            for name in names:
                digest.update(hashlib.sha256(prompts[name]).digest())
        except (ValidationError, KeyError) as exc:
            log.warning("no announcement for orbit %s: %s", orbit, exc)
            return None
        key = digest.hexdigest()[:24]
        with self._lock:
            if key in self._files:
                self._files.move_to_end(key)
                return self._files[key]
            path = self.directory / f"announce-{key}.wav"
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(render(names, prompts))
                tmp.replace(path)  # a worker never opens a half-written file
            except (OSError, EOFError, wave.Error) as exc:
                log.warning("cannot write the announcement of orbit %s: %s", orbit, exc)
                return None
            self._files[key] = path
            while len(self._files) > self.limit:
                _, old = self._files.popitem(last=False)
                old.unlink(missing_ok=True)
            return path
