"""deploy/multi-host: the deployment passes `callpark config check`, the etcd members agree,
the DNS zone passes `named-checkzone` and fails over by SRV priority, and the per-site edge
configurations render and pass `kamailio -c`.

named-checkzone comes from Debian's bind9-utils, kamailio from Debian's kamailio.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from callpark import deployment
from tests.deploy.promql import PROMETHEUS_DIR, REPO

MULTI = REPO / "deploy" / "multi-host"
ZONE = MULTI / "dns" / "callpark.example.zone"
ORIGIN = "callpark.example"
SITES = ("primary", "backup", "witness")
CALLPARK_BIN = Path(sys.executable).parent / "callpark"
CHECKZONE = shutil.which("named-checkzone")
KAMAILIO = shutil.which("kamailio")
needs_checkzone = pytest.mark.skipif(
    CHECKZONE is None, reason="named-checkzone not installed (Debian package bind9-utils)"
)


# -- deployment file ------------------------------------------------------------------------


def test_callpark_config_check_passes() -> None:
    if not CALLPARK_BIN.exists():
        pytest.skip(f"{CALLPARK_BIN} missing")
    result = subprocess.run(
        [str(CALLPARK_BIN), "config", "check", str(MULTI / "callpark.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ok (2 pools, 4 ranges" in result.stdout


def test_the_example_passes_only_because_it_is_secured(tmp_path: Path) -> None:
    text = (MULTI / "callpark.toml").read_text(encoding="utf-8")
    secured = deployment.load(MULTI / "callpark.toml").sip_security
    assert secured.peers_given and "0.0.0.0/0" not in secured.trusted_peers
    assert "127.0.0.1" not in text  # its edges and nodes listen on site addresses
    start = text.index("[security]")
    open_file = tmp_path / "open.toml"
    open_file.write_text(text[:start] + text[text.index("[[pool]]", start) :])
    with pytest.raises(
        deployment.DeploymentError, match=r"\[config-open-deployment\] the SIP edge listens on 10\.1\.0\.10"
    ):
        deployment.load(open_file)


def test_deployment_pairs_pools_across_sites_and_names_every_etcd_member() -> None:
    dep = deployment.load(MULTI / "callpark.toml")
    pools = dep.state.pools
    assert pools["pool-a"].backup == "pool-b" and pools["pool-b"].backup == "pool-a"
    assert pools["pool-a"].site != pools["pool-b"].site
    assert dep.etcd.members == 3 and dep.etcd.endpoints
    hosts = [urlsplit(u).hostname for u in dep.etcd.endpoints.split(",")]
    assert hosts == [f"etcd.{site}.{ORIGIN}" for site in SITES]


# -- etcd members ---------------------------------------------------------------------------


def read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and key.startswith("ETCD_"), f"{path.name}: {line!r}"
            assert key not in env, f"{path.name}: {key} twice"
            env[key] = value
    return env


MEMBERS = {site: read_env(MULTI / "etcd" / f"{site}.env") for site in SITES}


def test_etcd_members_form_one_cluster() -> None:
    clusters = {env["ETCD_INITIAL_CLUSTER"] for env in MEMBERS.values()}
    tokens = {env["ETCD_INITIAL_CLUSTER_TOKEN"] for env in MEMBERS.values()}
    assert len(clusters) == 1 and len(tokens) == 1
    initial = dict(item.split("=", 1) for item in clusters.pop().split(","))
    assert len(initial) == 3
    for site, env in MEMBERS.items():
        assert env["ETCD_NAME"] == f"etcd-{site}"
        # a member's advertised peer URL is the one the others bootstrap with
        assert initial[env["ETCD_NAME"]] == env["ETCD_INITIAL_ADVERTISE_PEER_URLS"]
        assert env["ETCD_INITIAL_CLUSTER_STATE"] == "new"
        assert env["ETCD_DATA_DIR"] == "/var/lib/callpark-etcd"  # StateDirectory= of the unit
        # peers authenticate each other; the certificate is the member's own
        assert urlsplit(env["ETCD_LISTEN_PEER_URLS"]).scheme == "https"
        assert env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"
        assert site in env["ETCD_PEER_CERT_FILE"] and site in env["ETCD_PEER_KEY_FILE"]
        # raft: the election timeout is 5-50 heartbeats (etcd's own rule is >= 5)
        assert 5 <= int(env["ETCD_ELECTION_TIMEOUT"]) / int(env["ETCD_HEARTBEAT_INTERVAL"]) <= 50
    # the three members' own settings differ: one per site
    assert len({env["ETCD_LISTEN_PEER_URLS"] for env in MEMBERS.values()}) == 3


def test_etcd_member_variables_are_etcd_flags() -> None:
    """Every ETCD_* variable is a flag of the installed etcd (etcd ignores unknown ones)."""
    etcd = shutil.which("etcd")
    if etcd is None:
        pytest.skip("etcd not installed (Debian package etcd-server)")
    out = subprocess.run([etcd, "--help"], capture_output=True, text=True, timeout=30, check=False)
    flags = set(re.findall(r"^\s+--([a-z0-9-]+)", out.stdout + out.stderr, flags=re.M))
    assert len(flags) > 40
    for site, env in MEMBERS.items():
        unknown = [k for k in env if k.removeprefix("ETCD_").lower().replace("_", "-") not in flags]
        assert not unknown, f"{site}.env: not etcd flags: {unknown}"


def test_deployment_endpoints_are_the_members_client_urls() -> None:
    dep = deployment.load(MULTI / "callpark.toml")
    assert dep.etcd.endpoints is not None
    advertised = [MEMBERS[site]["ETCD_ADVERTISE_CLIENT_URLS"] for site in SITES]
    assert dep.etcd.endpoints.split(",") == advertised


# -- DNS ------------------------------------------------------------------------------------


def checkzone(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHECKZONE is not None
    return subprocess.run(
        [CHECKZONE, "-k", "fail", "-n", "fail", "-M", "fail", "-S", "fail", *extra, ORIGIN, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@needs_checkzone
def test_named_checkzone_passes() -> None:
    result = checkzone(ZONE)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr


@needs_checkzone
def test_named_checkzone_rejects_a_broken_srv_record(tmp_path: Path) -> None:
    broken = tmp_path / "broken.zone"
    broken.write_text(ZONE.read_text().replace("SRV 20       100    5060", "SRV 20       100    sip"))
    assert checkzone(broken).returncode != 0


def canonical_records() -> list[tuple[str, int, str, list[str]]]:
    """(owner, ttl, type, rdata) of every record, from named-checkzone's canonical dump."""
    result = checkzone(ZONE, "-D", "-o", "-")
    assert result.returncode == 0, result.stderr
    records = []
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "IN":
            records.append((parts[0], int(parts[1]), parts[3], parts[4:]))
    return records


@needs_checkzone
def test_sip_srv_prefers_the_primary_edge_and_falls_back_to_the_backup_edge() -> None:
    records = canonical_records()
    a_records = {owner: rdata[0] for owner, _, rtype, rdata in records if rtype == "A"}
    srv = sorted(
        (int(r[0]), int(r[1]), int(r[2]), r[3])
        for owner, _, rtype, r in records
        if rtype == "SRV" and owner == f"_sip._udp.{ORIGIN}."
    )
    assert [target for *_, target in srv] == [f"edge.primary.{ORIGIN}.", f"edge.backup.{ORIGIN}."]
    (prio_a, weight_a, port_a, _), (prio_b, weight_b, port_b, _) = srv
    assert prio_a < prio_b, "the primary edge must have the lower (preferred) priority"
    assert weight_a > 0 and weight_b > 0 and port_a == port_b == 5060
    for *_, target in srv:
        assert target in a_records, f"SRV target {target} has no A record"
    # the edges' addresses are the ones the per-site edge notes render
    assert a_records[f"edge.primary.{ORIGIN}."] == "10.1.0.10"
    assert a_records[f"edge.backup.{ORIGIN}."] == "10.2.0.10"


@needs_checkzone
def test_every_host_the_examples_name_is_in_the_zone() -> None:
    names = {owner.rstrip(".") for owner, _, rtype, _ in canonical_records() if rtype == "A"}
    hosts = set()
    for target_file in (PROMETHEUS_DIR / "targets").glob("*.json"):
        for group in json.loads(target_file.read_text()):
            hosts |= {t.rsplit(":", 1)[0] for t in group["targets"]}
    for env in MEMBERS.values():
        for key in ("ETCD_ADVERTISE_CLIENT_URLS", "ETCD_INITIAL_ADVERTISE_PEER_URLS"):
            hosts.add(str(urlsplit(env[key]).hostname))
    assert hosts and hosts <= names, sorted(hosts - names)


# -- per-site edges ---------------------------------------------------------------------------


def test_edge_notes_render_configs_that_kamailio_accepts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (MULTI / "edges.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("OUT", str(tmp_path))
    exec(compile(blocks[0], "edges.md", "exec"), {"__name__": "edges_md"})
    sites = (("primary", "10.1.0.10"), ("backup", "10.2.0.10"))
    for site, address in sites:
        cfg = (tmp_path / site / "kamailio.cfg").read_text()
        dispatcher = (tmp_path / site / "dispatcher.list").read_text()
        assert f"listen=udp:{address}:5060" in cfg
        assert (
            'is_in_subnet("$si", "10.1.0.0/16")' in cfg and 'sl_send_reply("403", "Forbidden: untrusted source")' in cfg
        )
        assert dispatcher.count("sip:10.1.0.2") == 8 and dispatcher.count("sip:10.2.0.2") == 8
    if KAMAILIO is None:
        pytest.skip("kamailio not installed (Debian package kamailio): rendered, not checked with kamailio -c")
    for site, _ in sites:
        cfg = (tmp_path / site / "kamailio.cfg").read_text()
        local = tmp_path / site / "check.cfg"
        local.write_text(
            cfg.replace("/etc/kamailio/callpark-dispatcher.list", str(tmp_path / site / "dispatcher.list"))
        )
        result = subprocess.run(
            [KAMAILIO, "-c", "-f", str(local)], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
