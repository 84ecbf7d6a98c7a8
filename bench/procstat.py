"""CPU time and memory of a set of processes, read from /proc (Linux only)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    """One process at one instant: CPU seconds used so far and memory in kB."""

    pid: int
    cpu_s: float
    pss_kb: int
    rss_kb: int
    uss_kb: int


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (seconds) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
        text = fh.read()
    # comm may contain spaces and parentheses; the fields after the last ')' are fixed.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK


def memory_kb(pid: int) -> tuple[int, int, int]:
    """(Pss, Rss, Uss) of ``pid`` in kB from /proc/<pid>/smaps_rollup.

    Pss shares each page among the processes mapping it (including phones running the same
    Python and pjsua2 libraries); Uss (private pages only) is what killing the process frees.
    """
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii", errors="replace") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                fields[name] = int(parts[0])
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return fields.get("Pss", 0), fields.get("Rss", 0), uss


def sample(pid: int) -> ProcSample | None:
    """A sample of ``pid``, or None when it is gone."""
    try:
        cpu = cpu_seconds(pid)
        pss, rss, uss = memory_kb(pid)
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError, IndexError):
        return None
    return ProcSample(pid, cpu, pss, rss, uss)


@dataclass(frozen=True)
class GroupUsage:
    """CPU share and memory of a group of processes over a window."""

    processes: int
    window_s: float
    cpu_pct_of_core: float
    pss_mb: float
    rss_mb: float
    uss_mb: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "processes": self.processes,
            "window_s": round(self.window_s, 3),
            "cpu_pct_of_core": round(self.cpu_pct_of_core, 3),
            "pss_mb": round(self.pss_mb, 3),
            "rss_mb": round(self.rss_mb, 3),
            "uss_mb": round(self.uss_mb, 3),
        }


class Window:
    """CPU of groups of processes between :meth:`begin` and :meth:`end`; memory at the end."""

    def __init__(self, groups: Mapping[str, Iterable[int]]) -> None:
        self.pids = {name: list(members) for name, members in groups.items()}
        self.start: dict[int, ProcSample | None] = {}
        self.began = 0.0

    def begin(self) -> Window:
        self.start = {pid: sample(pid) for members in self.pids.values() for pid in members}
        self.began = time.monotonic()
        return self

    def end(self) -> dict[str, GroupUsage]:
        """Usage per group; processes gone during the window are left out of their group."""
        end = {pid: sample(pid) for members in self.pids.values() for pid in members}
        elapsed = max(1e-6, time.monotonic() - self.began)
        out: dict[str, GroupUsage] = {}
        for name, members in self.pids.items():
            cpu = 0.0
            pss = rss = uss = 0
            alive = 0
            for pid in members:
                a, b = self.start.get(pid), end.get(pid)
                if a is None or b is None:
                    continue
                alive += 1
                cpu += b.cpu_s - a.cpu_s
                pss += b.pss_kb
                rss += b.rss_kb
                uss += b.uss_kb
            out[name] = GroupUsage(alive, elapsed, 100.0 * cpu / elapsed, pss / 1024.0, rss / 1024.0, uss / 1024.0)
        return out


def measure(groups: Mapping[str, Iterable[int]], window_s: float) -> dict[str, GroupUsage]:
    """CPU of each group over ``window_s`` (ticks at both ends) and memory at the end."""
    window = Window(groups).begin()
    time.sleep(window_s)
    return window.end()


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()
