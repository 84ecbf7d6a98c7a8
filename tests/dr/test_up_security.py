"""``callpark up`` passes the deployment's [security] section to the nodes and the edge (real processes)."""

from __future__ import annotations

import ast
import re
import signal
import sys
from pathlib import Path

from callpark.edge.credentials import ha1
from callpark.lab.phone import Phone
from callpark.procs import ManagedProcess
from callpark.waiting import wait_until
from tests.edge.uac import Uac

REALM = "127.0.0.1"
CONFIG = """
[etcd]
members = 1
[timings]
controllers = 0
[[pool]]
name = "pool-a"
site = "site-a"
nodes = 1
workers = 1
[[range]]
name = "r"
start = "7000"
end = "7009"
pool = "pool-a"
[security]
trusted_peers = ["127.0.0.0/8"]
node_trusted_peers = ["127.0.0.1/32"]
digest_auth_file = "users.htdigest"
digest_realm = "127.0.0.1"
"""


def test_up_applies_trusted_peers_and_digest_auth(tmp_path: Path) -> None:
    password = "alice-up-pw-5"
    (tmp_path / "users.htdigest").write_text(f"alice:{REALM}:{ha1('alice', REALM, password)}\n")
    (tmp_path / "users.htdigest").chmod(0o600)
    config = tmp_path / "secure.toml"
    config.write_text(CONFIG)
    log = tmp_path / "up.log"
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "callpark.cli.app", "up", "--config", str(config), "--run-dir", str(run)]
    proc = ManagedProcess("up", argv, log_path=log)
    proc.start()
    phones: list[Phone] = []
    try:
        wait_until(lambda: "Ctrl-C stops everything." in log.read_text(), timeout=90, what="the cluster to start")
        text = log.read_text()
        assert "SIP security: edge trusts 127.0.0.0/8; digest auth on (realm 127.0.0.1, 1 users)" in text
        edge_port = int(re.search(r"SIP edge: 127\.0\.0\.1:(\d+)", text).group(1))  # type: ignore[union-attr]
        workers = ast.literal_eval(re.search(r"workers (\[.*\])", text).group(1))  # type: ignore[union-attr]
        worker_host, worker_port = workers[0].rsplit(":", 1)
        # the node trusts only 127.0.0.1 (and its edge): a request straight from 127.0.0.2 is refused
        with Uac((worker_host, int(worker_port)), "mallory", host="127.0.0.2") as mallory:
            direct = mallory.invite(f"sip:park@{workers[0]}")
            assert direct.status == 403 and direct.final is not None
            assert direct.final.reason == "Forbidden: untrusted peer"
        # the edge (trusted 127/8) challenges a phone without credentials...
        with Uac(("127.0.0.1", edge_port), "mallory", host="127.0.0.2") as mallory:
            assert mallory.invite("sip:park@127.0.0.1").status == 407
        # ...and lets an authenticated phone park
        edge = f"127.0.0.1:{edge_port}"
        alice = Phone(
            "alice", log_dir=tmp_path / "phones", registrar=edge, proxy=edge, auth_user="alice", password=password
        )
        phones.append(alice)
        alice.start()
        alice.register()
        since = alice.mark()
        handle = alice.call("sip:park@127.0.0.1")
        answered = alice.wait_state(handle, "CONFIRMED", since=since, timeout=10)
        assert answered["x_headers"]["X-Callpark-Orbit"] == "7000"
        alice.hangup(handle)
        proc.signal(signal.SIGTERM)
        wait_until(lambda: not proc.is_running(), timeout=30, what="up to stop")
        assert proc.returncode() == 0
    finally:
        for phone in phones:
            phone.stop()
        proc.stop()
    assert not any(password.encode() in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
