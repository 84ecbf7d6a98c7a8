"""Loopback port helpers: every process gets ports of its own, without collisions.

A port handed out here is (1) below the kernel's ephemeral range, so outgoing
connections of any process never take it between our choice and the bind, (2) bindable
for TCP (and UDP when asked) at the time of the choice, and (3) reserved across all
callpark processes of this user for :data:`RESERVATION_S` seconds by an O_EXCL file,
which covers the window between choosing a port in one process and binding it in a
child. Reservations expire by themselves; nothing needs cleaning up.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import tempfile
import threading
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"
PORT_RANGE = (20_000, 32_700)  # below Linux's default ephemeral range (32768-60999)
RESERVATION_S = 120.0

_lock = threading.Lock()
_rng = random.SystemRandom()


def _port_range() -> tuple[int, int]:
    text = os.environ.get("CALLPARK_PORT_RANGE", "")
    if "-" in text:
        low, high = (int(x) for x in text.split("-", 1))
        return low, high
    return PORT_RANGE


def _reservation_dir() -> Path:
    path = Path(tempfile.gettempdir()) / f"callpark-ports-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _claim(port: int) -> bool:
    """Reserve ``port`` for this machine's callpark processes (stale claims expire)."""
    path = _reservation_dir() / str(port)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            try:
                if time.time() - path.stat().st_mtime > RESERVATION_S:
                    path.unlink()
                    continue
            except FileNotFoundError:
                continue
            return False
        with contextlib.suppress(OSError):
            os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def port_bindable(port: int, *, host: str = LOOPBACK, tcp: bool = True, udp: bool = True) -> bool:
    """Whether ``host``:``port`` can be bound right now for TCP and/or UDP (nothing holds it)."""
    kinds = ([socket.SOCK_STREAM] if tcp else []) + ([socket.SOCK_DGRAM] if udp else [])
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port(*, udp_too: bool = False) -> int:
    """A loopback port that is free for TCP (and UDP when ``udp_too``) and reserved for us."""
    return free_port_block(1, udp_too=udp_too)


def free_port_block(count: int, *, udp_too: bool = True) -> int:
    """The first of ``count`` consecutive free, reserved loopback ports (for RTP ranges)."""
    low, high = _port_range()
    for _ in range(500):
        base = _rng.randrange(low, high - count)
        ports = range(base, base + count)
        with _lock:
            if not all(port_bindable(p, udp=udp_too) for p in ports):
                continue
            claimed = []
            for p in ports:
                if not _claim(p):
                    break
                claimed.append(p)
            if len(claimed) != count:
                for p in claimed:
                    with contextlib.suppress(OSError):
                        (_reservation_dir() / str(p)).unlink()
                continue
            return base
    raise OSError(f"no block of {count} free loopback ports found in {low}-{high}")
