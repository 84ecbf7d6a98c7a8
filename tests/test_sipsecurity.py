"""The deployment file's [security] section: parsing, one-line errors, what nodes and the edge get."""

from __future__ import annotations

from pathlib import Path

import pytest

from callpark import deployment
from callpark.edge.credentials import ha1
from callpark.lab.localcluster import LocalCluster
from callpark.peers import DEFAULT_TRUSTED_PEERS
from tests.conftest import run_console

POOL = "[[pool]]\nname='a'\nsite='s'\n"


def load(tmp_path: Path, security: str) -> deployment.Deployment:
    f = tmp_path / "d.toml"
    f.write_text(POOL + "[security]\n" + security)
    return deployment.load(f)


def test_without_the_section_loopback_is_trusted_and_nothing_is_authenticated(tmp_path: Path) -> None:
    f = tmp_path / "d.toml"
    f.write_text(POOL)
    sec = deployment.load(f).sip_security
    assert sec.trusted_peers == DEFAULT_TRUSTED_PEERS and sec.digest is None
    assert "--trusted-peers" not in sec.node_args()  # nodes trust only their edge


def test_a_full_section_reaches_the_nodes_and_the_edge(tmp_path: Path) -> None:
    (tmp_path / "users.htdigest").write_text(f"alice:callpark.test:{ha1('alice', 'callpark.test', 'pw')}\n")
    (tmp_path / "users.htdigest").chmod(0o640)
    dep = load(
        tmp_path,
        "trusted_peers=['127.0.0.0/8','10.0.0.0/8']\nnode_trusted_peers=['127.0.0.1']\n"
        "digest_auth_file='users.htdigest'\ndigest_realm='callpark.test'\n"
        "orbit_scan_burst=4\norbit_scan_per_minute=2.5\n",
    )
    sec = dep.sip_security
    assert sec.node_args() == [
        "--trusted-peers",
        "127.0.0.1/32",
        "--orbit-scan-burst",
        "4",
        "--orbit-scan-per-minute",
        "2.5",
    ]
    edge = LocalCluster(dep, tmp_path / "run", edge_port=25999).edge_config()
    assert edge.trusted_peers == ("127.0.0.0/8", "10.0.0.0/8")
    assert edge.auth is not None and edge.auth.users == {"alice": ha1("alice", "callpark.test", "pw")}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trusted_peers=['10.0.0.1/8']\n", "[trusted-peers] [security] trusted_peers: '10.0.0.1/8'"),
        ("trusted_peers='10.0.0.0/8'\n", "[config-security] [security] trusted_peers must be an array of strings"),
        ("node_trusted_peers=['nope']\n", "[security] node_trusted_peers: 'nope'"),
        ("orbit_scan_burst=0\n", "[config-security] [security] orbit scan burst must be 1 to 10000, not 0"),
        ("orbit_scan_burst=2.5\n", "orbit_scan_burst must be a whole number, not 2.5"),
        ("orbit_scan_per_minute='fast'\n", "orbit_scan_per_minute must be a number, not 'fast'"),
        ("digest_auth_file='u'\n", "digest_auth_file and digest_realm must be given together"),
        ("digest_auth_file='missing'\ndigest_realm='r'\n", "missing: cannot read"),
        ("digest_auth_file='u'\ndigest_realm='bad realm'\n", "realm 'bad realm'"),
        ("trusted=['10.0.0.0/8']\n", "[config-unknown] unknown [security] key(s): trusted"),
    ],
)
def test_bad_values_give_one_line_naming_them(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "u").write_text("alice:r:" + "0" * 32 + "\n")
    (tmp_path / "u").chmod(0o600)
    with pytest.raises(deployment.DeploymentError) as info:
        load(tmp_path, text)
    assert message in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_config_check_refuses_a_bad_security_section(tmp_path: Path) -> None:
    f = tmp_path / "d.toml"
    f.write_text(POOL + "[security]\ntrusted_peers=['300.1.1.1']\n")
    result = run_console("config", "check", str(f))
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "'300.1.1.1' is not an IP address or CIDR network" in result.stderr


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o620, 0o602])
def test_an_htdigest_file_others_may_read_or_the_group_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    users = tmp_path / "users.htdigest"
    users.write_text(f"alice:r:{ha1('alice', 'r', 'pw')}\n")
    users.chmod(mode)
    f = tmp_path / "d.toml"
    f.write_text(POOL + "[security]\ndigest_auth_file='users.htdigest'\ndigest_realm='r'\n")
    result = run_console("config", "check", str(f))
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert f"mode {mode:04o} lets others read it or the group or others write it" in result.stderr
    assert ha1("alice", "r", "pw") not in result.stderr
    users.chmod(0o640)
    assert run_console("config", "check", str(f)).returncode == 0


def test_register_peers_reach_the_edge_and_an_exposed_edge_needs_them_without_digest(tmp_path: Path) -> None:
    f = tmp_path / "d.toml"
    f.write_text(POOL + "[edge]\nhosts=['10.0.0.1']\n[security]\ntrusted_peers=['10.0.0.0/8']\n")
    result = run_console("config", "check", str(f))
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "[config-open-registrar]" in result.stderr and "register_peers" in result.stderr
    f.write_text(f.read_text() + "register_peers=['10.1.0.0/16']\n")
    dep = deployment.load(f)
    edge = LocalCluster(dep, tmp_path / "run", edge_port=25999).edge_config()
    assert edge.register_peers == ("10.1.0.0/16",)
