"""Ports handed out to different processes never collide and avoid the ephemeral range."""

from __future__ import annotations

import json
import subprocess
import sys

from callpark.netutil import PORT_RANGE, free_port, free_port_block

SCRIPT = (
    "import json; from callpark.netutil import free_port, free_port_block; "
    "ports = [free_port(udp_too=True) for _ in range(60)]; "
    "ports += [b + i for b in [free_port_block(8) for _ in range(10)] for i in range(8)]; "
    "print(json.dumps(ports))"
)


def test_ports_from_concurrent_processes_are_disjoint() -> None:
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    lists = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        lists.append(json.loads(out))
    flat = [p for ports in lists for p in ports]
    assert len(flat) == len(set(flat)) == 4 * 140
    assert all(PORT_RANGE[0] <= p < PORT_RANGE[1] for p in flat)


def test_blocks_are_consecutive_and_in_range() -> None:
    base = free_port_block(16)
    assert PORT_RANGE[0] <= base and base + 16 <= PORT_RANGE[1]
    assert free_port() != base
