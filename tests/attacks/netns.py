"""Run attack tests in a private network namespace where nothing can leave the machine.

``unshare --net`` gives the inner pytest only a loopback interface; the "outside" network
(TEST-NET-2) is routed to ``lo`` there and every packet to it is dropped and counted by an
iptables rule of that namespace, so a request the edge or a node relays or dials outward shows
up in :func:`outside_packets` and could never leave anyway.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

INSIDE = "CALLPARK_TEST_ATTACK_NETNS"
OUTSIDE_NET = "198.51.100.0/24"  # TEST-NET-2, routed and dropped inside the namespace only
VICTIM = "198.51.100.7"
_SETUP = (
    f"ip link set lo up && ip route add {OUTSIDE_NET} dev lo && "
    f'iptables -A OUTPUT -d {OUTSIDE_NET} -j DROP && exec "$@"'
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="a private network namespace needs root")
inside_only = pytest.mark.skipif(os.environ.get(INSIDE) != "1", reason="runs only inside its network namespace")


def outside_packets() -> int:
    """Packets sent towards the outside network (the namespace's iptables DROP rule counts them)."""
    out = subprocess.run(["iptables", "-L", "OUTPUT", "-v", "-x", "-n"], capture_output=True, text=True, check=True)
    rows = [line.split() for line in out.stdout.splitlines() if OUTSIDE_NET in line]
    assert len(rows) == 1, out.stdout
    return int(rows[0][0])


def run_inside(tmp_path: Path, targets: list[str], *, passed: int, timeout: float = 900) -> str:
    """Run pytest on ``targets`` inside a new namespace; assert ``passed`` tests passed; its output."""
    if os.environ.get(INSIDE) == "1":
        pytest.skip("already inside the namespace")
    cmd = ["unshare", "--net", "--", "sh", "-c", _SETUP, "sh", sys.executable, "-m", "pytest", "-q", "-x", "-rs"]
    cmd += ["-p", "no:cacheprovider", "--basetemp", str(tmp_path / "inner"), *targets]
    env = dict(os.environ, **{INSIDE: "1"})
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert f"{passed} passed" in done.stdout, done.stdout[-3000:]
    return done.stdout


def listener(host: str) -> socket.socket:
    """A UDP socket on ``host`` (any port) that records what reaches it; see :func:`received`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(0.5)
    return sock


def received(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on ``sock`` (half a second of quiet ends the read)."""
    got = []
    while True:
        try:
            got.append(sock.recv(65535))
        except TimeoutError:
            return got
