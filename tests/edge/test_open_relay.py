"""Open relay attacks on the edge: requests not addressed to it go nowhere but to park nodes.

The attack test runs inside a private network namespace of its own (``unshare --net``, only a
loopback interface): the "outside" network is routed to ``lo`` there and every packet to it is
dropped and counted by an iptables rule of that namespace, so a relayed request shows up in the
counter and could never leave the machine. Real Kamailio, SIPp stand-ins.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from callpark.edge import OrbitRange
from tests.edge.conftest import DOMAIN, Lab, needs_kamailio, needs_sipp, two_pool_config
from tests.edge.sipp import register
from tests.edge.uac import Uac

INSIDE = "CALLPARK_TEST_RELAY_NETNS"
OUTSIDE_NET = "198.51.100.0/24"  # TEST-NET-2, routed and dropped inside the namespace only
VICTIM = "198.51.100.7"
NETNS_SETUP = (
    f"ip link set lo up && ip route add {OUTSIDE_NET} dev lo && "
    f'iptables -A OUTPUT -d {OUTSIDE_NET} -j DROP && exec "$@"'
)


def _outside_packets() -> int:
    """Packets sent towards the outside network (the namespace's iptables DROP rule counts them)."""
    out = subprocess.run(["iptables", "-L", "OUTPUT", "-v", "-x", "-n"], capture_output=True, text=True, check=True)
    rows = [line.split() for line in out.stdout.splitlines() if OUTSIDE_NET in line]
    assert len(rows) == 1, out.stdout
    return int(rows[0][0])


def _listener(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(0.5)
    return sock


def _received(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(65535))
        except TimeoutError:
            return got


@pytest.mark.skipif(os.geteuid() != 0, reason="a private network namespace needs root")
def test_open_relay_attacks_run_in_a_private_network_namespace(tmp_path: Path) -> None:
    if os.environ.get(INSIDE) == "1":
        pytest.skip("already inside the namespace")
    target = f"{__file__}::test_relay_attacks_are_refused_and_parking_still_works"
    cmd = ["unshare", "--net", "--", "sh", "-c", NETNS_SETUP, "sh", sys.executable, "-m", "pytest", "-q", "-x"]
    cmd += ["-p", "no:cacheprovider", "--basetemp", str(tmp_path / "inner"), target]
    env = dict(os.environ, **{INSIDE: "1"})
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout


@needs_kamailio
@needs_sipp
@pytest.mark.skipif(os.environ.get(INSIDE) != "1", reason="runs only inside its network namespace")
def test_relay_attacks_are_refused_and_parking_still_works(lab: Lab) -> None:
    holder = lab.uas("holder")
    node = lab.uas("a1", scenario="redirect.xml", keys={"holder": holder.address})
    orbits = (OrbitRange(start="500", end="599", pool="a"),)
    edge = lab.edge(two_pool_config((node.address,), (holder.address,), extra_ranges=orbits))
    carol = lab.uas("carol")
    register(edge.address, "carol", carol.port, lab.root)
    bystander = _listener("127.0.0.5")  # listens, but no phone registered it
    bystander_uri = f"sip:victim@127.0.0.5:{bystander.getsockname()[1]}"
    before = _outside_packets()
    with bystander, Uac(edge.address, host="127.0.0.2") as attacker:
        for uri in (bystander_uri, f"sip:victim@{VICTIM}", f"sip:victim@{VICTIM}:5060"):
            call = attacker.invite(uri)
            assert call.status == 404 and call.final is not None, uri
            assert call.final.reason == "Not Found: relaying denied"
            assert [r.status_code for r in call.responses] == [404], uri  # no 100: no transaction
            assert attacker.message(uri).status == 404, uri
        assert _received(bystander) == []
        assert _outside_packets() == before
        # a registered user's name on a foreign host reaches only that user's registered contact
        hijack = attacker.invite(f"sip:carol@127.0.0.5:{bystander.getsockname()[1]}")
        assert hijack.answered_by == "carol" and _received(bystander) == []
        # legitimate traffic through the same edge: park, and a retrieve following the 302
        redirect = attacker.invite(f"sip:550@{DOMAIN}")
        assert redirect.status == 302 and redirect.final is not None
        follow = attacker.invite((redirect.final.header("Contact") or "").strip("<>"))
        assert follow.status == 200 and follow.answered_by == "holder" and follow.bye_status == 200
        # a registered phone, also by its Contact URI (as a Refer-To names it)
        for uri in (f"sip:carol@{DOMAIN}", f"sip:carol@127.0.0.1:{carol.port}"):
            call = attacker.invite(uri)
            assert call.status == 200 and call.answered_by == "carol" and call.bye_status == 200, uri
        assert _received(bystander) == []
