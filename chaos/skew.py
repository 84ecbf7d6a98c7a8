"""Launch ``callpark`` with a wall clock that can jump: the clock nemesis, per process.

``python -m callpark.chaos.skew FILE -- ARGS`` runs ``callpark ARGS`` with ``time.time``
(and ``time.time_ns``) shifted by the number of seconds written in FILE, re-read at
most every 0.1 s. Writing ``300`` into FILE steps that process's wall clock 5 minutes
ahead, as a bad NTP step would; the monotonic clock is untouched (fencing uses it).
libfaketime would do this below Python, but 0.9.10 breaks Python 3.11's timed waits
(``threading.Event.wait`` raises EINVAL under it), so the shift is applied here.

After installing the shift it runs ``callpark`` as a program (``python -m callpark.cli``
through :mod:`runpy`), not by importing the CLI: the chaos suite sits below the CLI in
the layers (docs/ARCHITECTURE.md), and this way the child is exactly the program the
node launcher would have run, with the clock shifted before anything reads it.
"""

from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path


def install(path: Path) -> None:
    """Shift this process's wall clock by the seconds in ``path`` (0 when absent or unreadable)."""
    real_time, real_time_ns, real_mono = time.time, time.time_ns, time.monotonic
    cache = {"at": -1.0, "offset": 0.0}

    def offset() -> float:
        now = real_mono()
        if now - cache["at"] > 0.1:
            try:
                cache["offset"] = float(path.read_text().strip() or 0)
            except (OSError, ValueError):
                cache["offset"] = 0.0
            cache["at"] = now
        return cache["offset"]

    time.time = lambda: real_time() + offset()
    time.time_ns = lambda: real_time_ns() + int(offset() * 1e9)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "--":
        print("usage: python -m callpark.chaos.skew OFFSET_FILE -- CALLPARK_ARGS...", file=sys.stderr)
        return 2
    install(Path(argv[0]))
    sys.argv = [sys.argv[0], *argv[2:]]
    runpy.run_module("callpark.cli", run_name="__main__", alter_sys=True)  # exits with callpark's status
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
