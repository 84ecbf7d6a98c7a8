"""A local cluster from a deployment file with ``[sip_tls]`` and ``[http]`` and no certificate
files: lab certificates are made, the edge listens for SIP over TLS, nodes and controllers serve
HTTPS with the admin token, and a call is parked and retrieved by TLS phones."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from callpark import deployment
from callpark.httpserver import client_context
from callpark.lab.localcluster import ClusterTimings, LocalCluster
from callpark.lab.phone import Phone
from callpark.lab.phone.flows import connected_call, talking
from callpark.netutil import LOOPBACK
from callpark.waiting import wait_until
from tests.dr.conftest import DrLab

TOKEN = "tok-7e1f0a2b3c4d5e6f708192a3b4c5d6e7"
FILE = """
[etcd]
members = 1

[[pool]]
name = "pool-a"
site = "site-a"
nodes = 1
workers = 1

[[range]]
name = "a-park"
start = "7000"
end = "7009"
pool = "pool-a"

[sip_tls]

[http]
https = true
admin_token_file = "admin.token"
"""


def test_a_local_cluster_with_sip_tls_and_https(dr: DrLab, tmp_path: Path) -> None:
    (tmp_path / "admin.token").write_text(TOKEN + "\n")
    (tmp_path / "admin.token").chmod(0o600)
    (tmp_path / "d.toml").write_text(FILE)
    dep = deployment.load(tmp_path / "d.toml")
    dr.cluster = LocalCluster(dep, tmp_path / "cluster", ClusterTimings(controllers=1))
    cluster = dr.cluster.start()
    enc = cluster.encryption
    assert enc.edge_tls is not None and enc.http_ca is not None
    node = cluster.nodes["pool-a"][0]
    assert node.info["scheme"] == "https" and node.get("/readyz")[0] == 200
    req = urllib.request.Request(
        f"https://127.0.0.1:{node.http_port}/api/parked", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=5, context=client_context(enc.http_ca)) as resp:
        assert resp.status == 200
    assert cluster.controllers[0].info["scheme"] == "https" and cluster.controllers[0].status() != {}

    address = f"{LOOPBACK}:{enc.edge_tls.port}"
    phones = {}
    for user in ("parker", "alice", "carol"):
        phone = Phone(
            user,
            log_dir=tmp_path / "phones",
            registrar=address,
            proxy=address,
            auto_answer=user == "alice",
            extra_args=["--tls-ca", str(enc.http_ca)],
        )
        dr.phones.append(phone)  # stopped by the fixture
        phone.start()
        phone.register(timeout=10)
        phones[user] = phone
    assert all("transport=tls" in c.lower() for cs in cluster.edge.registrations().values() for c in cs)  # type: ignore[union-attr]
    record = dr.park(phones["parker"], phones["alice"])
    carol = phones["carol"]
    since = carol.mark()
    handle = carol.call(f"sip:{record['orbit']}@{LOOPBACK}")
    carol.wait_state(handle, "CONFIRMED", since=since, timeout=10)
    a_call = connected_call(phones["alice"], remote_contains="carol@")
    assert talking(phones["alice"], a_call, carol, connected_call(carol, remote_contains="alice@"))
    wait_until(lambda: not dr.parked(), timeout=10, what="the orbit to be freed")
