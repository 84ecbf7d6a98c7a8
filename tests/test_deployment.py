"""Deployment files, ``config check``/``apply``, ``status`` and the ``demo`` main job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from callpark import deployment
from callpark.store.etcd import EtcdStore
from tests.conftest import Cli, run_console, snapshot_keys

GOOD = deployment.DEFAULT_LOCAL_FILE


def test_shipped_local_cluster_file_is_valid() -> None:
    dep = deployment.load(GOOD)
    assert dep.etcd.members == 3
    assert dep.state.pools["pool-a"].backup == "pool-b" and dep.state.pools["pool-b"].backup == "pool-a"
    # one SIP domain for the whole deployment; the OnTimeoutURI lives in it (no 478 at the edge)
    assert dep.sip_domain == "127.0.0.1"
    assert dep.state.settings("global").on_timeout_uri == f"sip:operator@{dep.sip_domain}"
    assert dep.parker_notices is True


def test_parker_notices_are_on_unless_the_deployment_turns_them_off(tmp_path: Path) -> None:
    f = tmp_path / "d.toml"
    f.write_text("[edge]\ndomain='127.0.0.1'\n")
    assert deployment.load(f).parker_notices is True
    f.write_text("[notifications]\nparker = false\n")
    assert deployment.load(f).parker_notices is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[[pool]]\nname='a'\nsite='s'\n[[range]]\nname='r'\nstart='0700'\nend='0799'\npool='a'\n",
            "[orbit-leading-zero]",
        ),
        ("[[pool]]\nname='a'\nsite='s'\nbackup='zz'\n", "[pool-missing]"),
        ("[[pool]]\nname='a'\n", "missing 'site'"),
        ("[[pool]]\nname='a'\nsite=3\n", "'site' must be a string"),
        ("[etcd]\nmembers=2\n", "[config-etcd]"),
        ("[bogus]\n", "[config-unknown]"),
        ("[cps.global]\nMaxCallPickupAttempts=11\n", "[cps-attempts]"),
        ("[cps.'pool:a']\nMaxCallPickupAttempts=2\n", "[cps-scope]"),
        ("this is = = not toml", "not valid TOML"),
        ("[[pool]]\nname='a'\nsite='s'\n[moh]\nb='default'\n", "[pool-missing]"),
        ("[timings]\nlease_ttl_s=4\nkeepalive_s=2\n", "[timing-keepalive]"),
        ("[timings]\ncontroller_loop_s=3\n", "[timing-loop]"),
        ("[timings]\nlease_ttl_s=4.5\n", "[config-type]"),
        ("[timings]\nlease_tt=4\n", "[config-unknown]"),
        ("[edge]\nport=70000\n", "[config-edge]"),
        ("[edge]\ndomain='bad domain'\n", "[config-edge]"),
        ("[edge]\ndomain='example.org'\n[cps.global]\nOnTimeoutURI='sip:op@evil.example'\n", "[config-on-timeout-uri]"),
        ("[edge]\nhosts=['10.0.0.1']\n", "[config-open-deployment] the SIP edge listens on 10.0.0.1"),
        ("[[pool]]\nname='a'\nsite='s'\nhosts=['0.0.0.0']\n", "[config-open-deployment] pool 'a' listens on 0.0.0.0"),
        ("[edge]\nhosts=['10.0.0.1']\n[security]\ntrusted_peers=['0.0.0.0/0']\n", "[config-open-deployment]"),
        ("[edge]\nhosts=['10.0.0.1']\n[security]\ntrusted_peers=['10.0.0.0/8', '::/0']\n", "[config-open-deployment]"),
        (
            "[edge]\nhosts=['10.0.0.1']\n[security]\ntrusted_peers=['10.0.0.0/8']\n",
            "[config-open-registrar] the SIP edge",
        ),
        (
            "[edge]\nhosts=['10.0.0.1']\n[security]\ntrusted_peers=['10.0.0.0/8']\nregister_peers=['0.0.0.0/0']\n",
            "[config-open-registrar]",
        ),
        ("[edge]\nhosts=['edge.example']\n", "[config-hosts]"),
        ("[edge]\nhosts=[]\n", "[config-hosts]"),
        ("[notifications]\nparker='yes'\n", "[config-type] [notifications] parker must be true or false"),
        ("[notifications]\nparkers=true\n", "[config-unknown]"),
    ],
)
def test_bad_files_give_one_line_naming_the_problem(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "d.toml"
    f.write_text(text)
    with pytest.raises(deployment.DeploymentError) as info:
        deployment.load(f)
    assert message in str(info.value) and str(f) in str(info.value)
    assert "\n" not in str(info.value)


def test_a_non_loopback_deployment_passes_with_trusted_peers_or_digest_auth(tmp_path: Path) -> None:
    f = tmp_path / "d.toml"
    f.write_text(
        "[edge]\nhosts=['10.0.0.1']\n[security]\ntrusted_peers=['10.0.0.0/8']\nregister_peers=['10.1.0.0/16']\n"
    )
    assert deployment.load(f).sip_security.peers_given
    (tmp_path / "users.htdigest").write_text("alice:r:" + "0" * 32 + "\n")
    (tmp_path / "users.htdigest").chmod(0o600)
    f.write_text("[edge]\nhosts=['10.0.0.1']\n[security]\ndigest_auth_file='users.htdigest'\ndigest_realm='r'\n")
    assert deployment.load(f).sip_security.digest is not None
    f.write_text("[edge]\nhosts=['127.0.0.1', '::1']\n")  # loopback needs neither
    assert deployment.load(f).sip_security.digest is None


def test_config_check_refuses_an_open_deployment_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "open.toml"
    bad.write_text("[edge]\nhosts=['192.0.2.10']\n")
    result = run_console("config", "check", str(bad))
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "[config-open-deployment]" in result.stderr and "neither digest_auth_file nor trusted_peers" in result.stderr


def test_config_check_cli(tmp_path: Path) -> None:
    assert run_console("config", "check", str(GOOD)).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[[pool]]\nname='a'\nsite='s'\n[moh]\na='missing.wav'\n")
    result = run_console("config", "check", str(bad))
    assert result.returncode == 1 and "[moh-file]" in result.stderr and result.stderr.count("\n") == 1


def test_apply_is_one_transaction_and_status_shows_it(run_cli: Cli, etcd: EtcdStore) -> None:
    run_cli.ok("config", "apply", str(GOOD))
    view = json.loads(run_cli.ok("status", "--json"))
    assert [p["name"] for p in view["pools"]] == ["pool-a", "pool-b"]
    assert {r["name"] for r in view["ranges"]} == {"pool-a-park", "pool-a-star", "pool-b-park", "pool-b-pickup"}
    assert view["cps"]["site:site-b"]["MaxCallPickupAttempts"] == 2
    assert all(e["healthy"] for e in view["etcd"]["endpoints"])
    text = run_cli.ok("status")
    assert "pool-a-park" in text and "site:site-b" in text
    # applying the same file again changes nothing
    before = {k: v for k, v in snapshot_keys(etcd).items() if not k.endswith("config/serial")}
    run_cli.ok("config", "apply", str(GOOD))
    assert {k: v for k, v in snapshot_keys(etcd).items() if not k.endswith("config/serial")} == before


def test_unreachable_etcd_is_a_one_line_error_with_exit_3() -> None:
    result = run_console("--etcd", "http://127.0.0.1:9", "orbit", "get", env={"CALLPARK_TIMEOUT_MULTIPLIER": "1"})
    assert result.returncode == 3
    assert result.stderr.startswith("callpark: error: [etcd] etcd unreachable") and result.stderr.count("\n") == 1


def test_bad_endpoint_text_is_refused() -> None:
    result = run_console("--etcd", "not a url", "orbit", "get")
    assert result.returncode == 3 and "is not a URL" in result.stderr


def test_malformed_record_in_etcd_names_the_key(run_cli: Cli, etcd: EtcdStore) -> None:
    from callpark.store.kv import Put
    from callpark.store.schema import Keys

    etcd.txn([], [Put(Keys.range("broken"), b'{"v": 1, "name": "broken"')])
    result = run_cli("orbit", "get")
    assert result.code == 3 and Keys.range("broken") in result.err and result.err.count("\n") == 1
    etcd.txn([], [Put(Keys.range("broken"), b'{"v": 99}')])
    assert "unknown schema version" in run_cli("orbit", "get").err


def test_demo_main_job_runs_and_leaves_nothing_behind() -> None:
    result = run_console("demo", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "started etcd: 3 member(s)" in result.stdout
    assert "pool-a-park" in result.stdout and "stopped phones, nodes, edge and etcd" in result.stdout
    assert "verdict: PASS" in result.stdout
