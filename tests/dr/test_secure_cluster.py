"""End to end on a TLS + auth etcd: a real 3-member cluster with mutual TLS, etcd
authentication and the ``callpark`` role; park nodes, a controller and the admin CLI all
reach it with the same credentials, and a call is parked through the SIP edge."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from callpark import deployment
from callpark.errors import StoreAuthError, StoreUnavailable
from callpark.lab.localcluster import ClusterTimings, LocalCluster
from callpark.lab.tls import make_pki
from callpark.store.access import EtcdAccess
from callpark.store.etcd import EtcdStore
from callpark.store.schema import Keys
from callpark.waiting import wait_until
from tests.conftest import run_console
from tests.dr.conftest import POOLS_AND_RANGES, DrLab

SECURE = """
[etcd]
members = 3
tls = true                   # throwaway CA; mutual TLS between members and for clients
auth = true                  # root + a 'callpark' user whose role may touch /callpark/ only
""" + POOLS_AND_RANGES.format(a_nodes=1, b_nodes=1, workers=1)

# The same configuration for a real cluster: client settings in [etcd] (paths relative to
# the file), used by `callpark config apply` when no option or environment gives them.
CLIENT_SECTION = """
[etcd]
endpoints = "{endpoints}"
ca = "{ca}"
cert = "{cert}"
key = "{key}"
user = "callpark"
password_file = "{password_file}"
"""


def test_nodes_controller_and_cli_work_on_tls_and_auth_etcd(dr: DrLab, tmp_path: Path) -> None:
    path = tmp_path / "secure.toml"
    path.write_text(SECURE)
    dep = deployment.load(path)
    dr.cluster = LocalCluster(dep, tmp_path / "cluster", ClusterTimings(controllers=1))
    cluster = dr.cluster.start()
    access = cluster.access
    assert access.endpoints and all(u.startswith("https://") for u in access.endpoints.split(","))
    assert access.user == "callpark" and access.password_file and access.cert

    # nodes and the controller got the credentials: members registered, owners assigned
    wait_until(lambda: len(dr.owners()) == 2, timeout=20, what="the controller to assign range owners")
    assert cluster.store is not None
    members = cluster.store.get_prefix(Keys.MEMBERS).entries
    assert {k.removeprefix(Keys.MEMBERS) for k in members} == {"pool-a/pool-a-n1", "pool-b/pool-b-n1"}
    assert all(json.loads(e.value)["ready"] for e in members.values())
    assert dr.owners() == {"a-park": ("pool-a", 1), "b-park": ("pool-b", 1)}
    node_argv = " ".join(cluster.nodes["pool-a"][0].process.argv)
    assert "--etcd-password-file" in node_argv and access.password_file in node_argv
    password = Path(access.password_file).read_text().strip()
    assert password not in node_argv and password not in " ".join(cluster.controllers[0].process.argv)

    # a real park through the edge, served by a node that talks to etcd over TLS with auth
    parker, caller = dr.phone("parker"), dr.phone("caller", auto_answer=True)
    record = dr.park(parker, caller)
    assert record["pool"] == "pool-a" and record["holder"]["node"] == "pool-a-n1"

    # admin CLI with the environment the units use: writes config the nodes then serve
    env = access.env()
    added = run_console("orbit", "new", "a-more", "--start", "7050", "--end", "7059", "--pool", "pool-a", env=env)
    assert added.returncode == 0, added.stderr
    listed = run_console("parked", "list", "--json", env=env)
    assert listed.returncode == 0 and record["orbit"] in listed.stdout, listed.stderr
    dr_status = run_console("dr", "status", env=env)
    assert dr_status.returncode == 0 and "controller leader: controller-1" in dr_status.stdout, dr_status.stderr

    # the deployment file's [etcd] client settings alone (no option, no environment)
    client_file = tmp_path / "client.toml"
    fields = {k: getattr(access, k) for k in ("endpoints", "ca", "cert", "key", "password_file")}
    client_file.write_text(CLIENT_SECTION.format(**fields) + SECURE[SECURE.index("[[pool]]") :])
    applied = run_console("config", "apply", str(client_file), env={"CALLPARK_ETCD": ""})
    assert applied.returncode == 0, applied.stderr
    assert cluster.store.get(Keys.range("a-more")) is None  # etcd equals the file again

    # clients without credentials, or trusting another CA, are refused
    for bad in (
        EtcdAccess(endpoints=access.endpoints),
        replace(access, ca=str(make_pki(tmp_path / "other-ca", {}).ca)),
        replace(access, user=None, password_file=None),
    ):
        with pytest.raises((StoreAuthError, StoreUnavailable)):
            store = EtcdStore.connect(bad, request_timeout_s=0.5, retry_deadline_s=1)
            try:
                store.get_prefix(Keys.CONFIG)
            finally:
                store.close()
    refused = run_console("orbit", "get", env={**env, "CALLPARK_ETCD_CA": str(tmp_path / "other-ca" / "ca.crt")})
    assert refused.returncode == 3 and "not trusted" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
