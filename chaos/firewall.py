"""Cut and degrade real traffic inside the suite's private namespace with iptables.

Every rule carries a comment with its fault's tag, so healing removes exactly the rules
of that fault, and the packet counters of those rules prove the fault really happened
(a cut that dropped no packet did not test anything). Only ever used inside the
namespace made by :mod:`callpark.chaos.netns`.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence

from callpark.chaos import netns

CHAIN = "INPUT"  # drop on arrival: senders see no error, as on a real lossy link


class FirewallError(RuntimeError):
    """An iptables command failed."""


def _iptables(*args: str) -> str:
    proc = subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise FirewallError(f"iptables {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


class Firewall:
    """Tagged DROP rules in this namespace's INPUT chain."""

    def __init__(self) -> None:
        if not netns.inside():
            raise FirewallError("refusing to touch iptables outside the chaos suite's own network namespace")

    def cut(self, tag: str, sources: Sequence[str], destinations: Sequence[str] = ("0.0.0.0/0",)) -> None:
        """Drop every packet between any of ``sources`` and any of ``destinations``, both ways."""
        for a in sources:
            for b in destinations:
                self._drop(tag, ["-s", a, "-d", b])
                self._drop(tag, ["-s", b, "-d", a])

    def lose(self, tag: str, destinations: Sequence[str], probability: float, protocol: str = "udp") -> None:
        """Drop each ``protocol`` packet to or from ``destinations`` with ``probability``."""
        for net in destinations:
            for side in ("-d", "-s"):
                self._drop(
                    tag,
                    [
                        "-p",
                        protocol,
                        side,
                        net,
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        f"{probability}",
                    ],
                )

    def queue(self, tag: str, destinations: Sequence[str], queue_num: int, protocol: str = "udp") -> None:
        """Hand ``protocol`` packets to or from ``destinations`` to NFQUEUE ``queue_num`` (bypass if nobody reads)."""
        for net in destinations:
            for side in ("-d", "-s"):
                _iptables(
                    "-I", CHAIN, "-p", protocol, side, net, "-m", "comment", "--comment", tag,
                    "-j", "NFQUEUE", "--queue-num", str(queue_num), "--queue-bypass",
                )  # fmt: skip

    def _drop(self, tag: str, match: list[str]) -> None:
        _iptables("-I", CHAIN, *match, "-m", "comment", "--comment", tag, "-j", "DROP")

    def heal(self, tag: str) -> int:
        """Remove every rule of ``tag``; returns how many packets they matched in all."""
        matched = self.packets(tag)
        for line in _iptables("-S", CHAIN).splitlines():
            if f'--comment "{tag}"' in line or f"--comment {tag} " in line + " ":
                _iptables("-D", *_split_rule(line)[1:])
        return matched

    def packets(self, tag: str) -> int:
        """Packets matched so far by the rules of ``tag``."""
        total = 0
        for line in _iptables("-L", CHAIN, "-v", "-n", "-x").splitlines():
            if f"/* {tag} */" in line:
                fields = line.split()
                if fields and fields[0].isdigit():
                    total += int(fields[0])
        return total

    def rules(self) -> list[str]:
        return [line for line in _iptables("-S", CHAIN).splitlines() if line.startswith("-A")]


def _split_rule(line: str) -> list[str]:
    """``-A OUTPUT -s x -m comment --comment "a b" -j DROP`` split like a shell would."""
    return [m.group(1) if m.group(1) is not None else m.group(2) for m in re.finditer(r'"([^"]*)"|(\S+)', line)]
