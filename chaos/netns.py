"""Run the chaos suite inside a private network namespace of its own.

Network faults must cut real traffic without touching the machine's network, so
``callpark chaos run`` re-executes itself under ``unshare --net``: a fresh namespace
with only a loopback interface, in which etcd, nodes, the edge, controllers and phones
all run. Its firewall rules (:mod:`callpark.chaos.firewall`) live and die with it: the
namespace disappears when the last process in it exits, so nothing can leak.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence

ENV_INSIDE = "CALLPARK_CHAOS_NETNS"


class NetnsUnavailable(RuntimeError):
    """This machine cannot give the suite a private network namespace."""


def inside() -> bool:
    """Whether this process runs in the suite's private namespace."""
    return os.environ.get(ENV_INSIDE) == "1"


def check_available() -> None:
    """Raise :class:`NetnsUnavailable` naming what is missing (root, unshare, ip, iptables)."""
    if os.geteuid() != 0:
        raise NetnsUnavailable("network faults need root (a private network namespace and iptables)")
    for tool in ("unshare", "ip", "iptables"):
        if shutil.which(tool) is None:
            raise NetnsUnavailable(f"network faults need {tool!r}; run scripts/bootstrap.sh")


def reexec(argv: Sequence[str]) -> None:
    """Replace this process with ``python -m callpark.cli ARGV`` inside a new network namespace.

    The PID stays the same, so whoever started us still stops us by PID.
    """
    check_available()
    env = dict(os.environ, **{ENV_INSIDE: "1"})
    script = 'ip link set lo up && exec "$@"'
    cmd = ["unshare", "--net", "--", "sh", "-c", script, "sh", sys.executable, "-m", "callpark.cli", *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe("unshare", cmd, env)
