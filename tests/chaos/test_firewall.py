"""The network faults really cut traffic, only inside the suite's own namespace, and heal."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from callpark.chaos import netns
from callpark.chaos.firewall import Firewall, FirewallError


def test_the_firewall_refuses_to_touch_the_host_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(netns.ENV_INSIDE, raising=False)
    with pytest.raises(FirewallError, match="outside the chaos suite's own network namespace"):
        Firewall()


PROGRAM = textwrap.dedent(
    """
    import socket, time
    from callpark.chaos.firewall import Firewall
    from callpark.chaos.nfqueue import Delayer

    fw = Firewall()
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.10.1", 0))
    server.settimeout(0.3)
    port = server.getsockname()[1]
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def delivered(n=20):
        got = 0
        for _ in range(n):
            client.sendto(b"x", ("127.0.10.1", port))
            try:
                server.recv(16); got += 1
            except TimeoutError:
                pass
        return got

    print("before", delivered())
    fw.cut("t-cut", ["127.0.10.0/24"])
    print("cut", delivered(5), fw.packets("t-cut") > 0)
    print("healed-matched", fw.heal("t-cut") > 0, "rules", len(fw.rules()))
    print("after", delivered())
    fw.queue("t-delay", ["127.0.10.0/24"], 5)
    d = Delayer(5, delay_s=0.15, seed=3).start()
    t = time.monotonic(); client.sendto(b"y", ("127.0.10.1", port)); server.settimeout(2); server.recv(16)
    took = time.monotonic() - t
    d.stop(); fw.heal("t-delay")
    print("delayed", took >= 0.14, d.delayed > 0)
    """
)


def test_cut_and_delay_really_happen_and_heal_inside_a_private_namespace() -> None:
    try:
        netns.check_available()
    except netns.NetnsUnavailable as exc:
        pytest.skip(str(exc))
    proc = subprocess.run(
        ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, "-c", PROGRAM],
        env={**__import__("os").environ, netns.ENV_INSIDE: "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    assert lines["before"] == "20"
    assert lines["cut"] == "0 True"
    assert lines["healed-matched"] == "True rules 0"
    assert lines["after"] == "20"
    assert lines["delayed"] == "True True"
