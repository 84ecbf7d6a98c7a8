"""Loopback port helpers: every process gets ephemeral ports of its own."""

from __future__ import annotations

import socket
import threading

LOOPBACK = "127.0.0.1"

_reserved: set[int] = set()
_lock = threading.Lock()


def free_port(*, udp_too: bool = False) -> int:
    """Return a loopback port that is free for TCP (and UDP when ``udp_too``).

    The kernel picks the port (bind to 0); ports handed out by this process are
    never handed out twice, so two services started by one test never collide.
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((LOOPBACK, 0))
            port = int(tcp.getsockname()[1])
            if udp_too:
                try:
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                        udp.bind((LOOPBACK, port))
                except OSError:
                    continue
        with _lock:
            if port in _reserved:
                continue
            _reserved.add(port)
        return port
    raise OSError("no free loopback port found after 200 tries")


def free_port_block(count: int, *, udp_too: bool = True) -> int:
    """Return the first of ``count`` consecutive free loopback ports (for RTP ranges)."""
    for _ in range(200):
        base = free_port(udp_too=udp_too)
        socks: list[socket.socket] = []
        try:
            ok = True
            for offset in range(1, count):
                kind = socket.SOCK_DGRAM if udp_too else socket.SOCK_STREAM
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                try:
                    s.bind((LOOPBACK, base + offset))
                except OSError:
                    ok = False
                    break
            if ok:
                with _lock:
                    _reserved.update(range(base, base + count))
                return base
        finally:
            for s in socks:
                s.close()
    raise OSError(f"no block of {count} free loopback ports found")
