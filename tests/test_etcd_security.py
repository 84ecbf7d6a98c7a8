"""etcd security: a real 3-member TLS + auth cluster, the callpark role, credentials everywhere.

One secure cluster per module (mutual TLS between members and for clients, auth on with
``root`` and ``callpark``); every test stops what it starts by PID.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from callpark import deployment
from callpark.errors import StoreAuthError, StoreError, StoreUnavailable
from callpark.lab.etcd import LocalEtcdCluster
from callpark.lab.tls import make_pki
from callpark.store.access import EtcdAccess, EtcdAccessError
from callpark.store.etcd import EtcdStore
from callpark.store.kv import Put
from callpark.store.schema import Keys
from callpark.waiting import wait_until
from tests.conftest import run_console


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcdCluster]:
    cluster = LocalEtcdCluster(tmp_path_factory.mktemp("secure-etcd"), members=3, tls=True, auth=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _password_file(path: Path, text: str, mode: int = 0o600) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    path.chmod(mode)
    return str(path)


def _env(access: EtcdAccess) -> dict[str, str]:
    return access.env()


def _etcdctl(cluster: LocalEtcdCluster, user: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """etcdctl as an operator runs it (docs/OPERATIONS.md): the password through ETCDCTL_USER."""
    a = cluster.access(user)
    assert a.ca and a.cert and a.key and a.password_file
    password = Path(a.password_file).read_text().strip()
    env = {**os.environ, "ETCDCTL_API": "3", "ETCDCTL_USER": f"{user}:{password}"}
    tls = [f"--cacert={a.ca}", f"--cert={a.cert}", f"--key={a.key}"]
    cmd = ["etcdctl", f"--endpoints={cluster.endpoints}", *tls, "--command-timeout=5s", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env, check=False)


def test_throwaway_pki_keys_are_private_and_certificates_chain_to_the_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", {"client": "someone"})
    keys = [pki.server.key, pki.peer.key, pki.clients["client"].key, tmp_path / "pki" / "ca.key"]
    assert all(stat.S_IMODE(k.stat().st_mode) == 0o600 for k in keys)
    assert stat.S_IMODE((tmp_path / "pki").stat().st_mode) == 0o700
    checks = [(pki.server.cert, "sslserver"), (pki.peer.cert, "sslclient"), (pki.clients["client"].cert, "sslclient")]
    for cert, purpose in checks:
        done = subprocess.run(
            ["openssl", "verify", "-CAfile", str(pki.ca), "-purpose", purpose, str(cert)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    other = make_pki(tmp_path / "other", {})
    refused = subprocess.run(["openssl", "verify", "-CAfile", str(other.ca), str(pki.server.cert)], capture_output=True)
    assert refused.returncode != 0  # a different throwaway CA does not vouch for it


def test_members_talk_mutual_tls_and_clients_only_https(secure: LocalEtcdCluster) -> None:
    assert all(u.startswith("https://127.0.0.1:") for u in secure.client_urls)
    done = _etcdctl(secure, "root", "member", "list", "-w", "json")
    assert done.returncode == 0, done.stderr
    members = json.loads(done.stdout)["members"]
    assert len(members) == 3
    assert all(u.startswith("https://") for m in members for u in m["peerURLs"] + m["clientURLs"])
    roles = _etcdctl(secure, "root", "role", "get", "callpark")
    assert roles.returncode == 0 and "[/callpark/, /callpark0)" in roles.stdout, roles.stdout + roles.stderr


def test_callpark_user_reads_and_writes_its_prefix_only(secure: LocalEtcdCluster) -> None:
    store = EtcdStore.connect(secure.access(), retry_deadline_s=3)
    root = EtcdStore.connect(secure.access("root"), retry_deadline_s=3)
    try:
        store.txn([], [Put(Keys.ROOT + "t/k", b"v")])
        assert store.get(Keys.ROOT + "t/k") is not None
        root.txn([], [Put("/elsewhere/k", b"root may")])  # the key exists: a refusal is the role's
        refused: list[Callable[[], object]] = [
            lambda: store.get("/elsewhere/k"),
            lambda: store.txn([], [Put("/elsewhere/k", b"no")]),
            lambda: store.get_prefix("/"),
            lambda: store.txn([], [Put("/callpark", b"no")]),  # the prefix is /callpark/, not /callpark*
        ]
        for attempt in refused:
            with pytest.raises(StoreAuthError, match=r"permission denied for user 'callpark'") as info:
                attempt()
            assert "\n" not in str(info.value)
        entry = root.get("/elsewhere/k")
        assert entry is not None and entry.value == b"root may"
    finally:
        store.close()
        root.close()


def test_wrong_password_is_one_clear_line_in_the_store_and_the_cli(secure: LocalEtcdCluster, tmp_path: Path) -> None:
    bad = replace(secure.access(), password_file=_password_file(tmp_path / "bad", "not-the-password"))
    with pytest.raises(StoreAuthError, match=r"^etcd refused user 'callpark': wrong user name or password$"):
        EtcdStore.connect(bad, retry_deadline_s=3)
    result = run_console("orbit", "get", env=_env(bad))
    assert result.returncode == 3
    assert result.stderr.strip() == "callpark: error: [etcd] etcd refused user 'callpark': wrong user name or password"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"user": None, "password_file": None}, r"permission denied for this client \(no etcd user given"),
        ({"cert": None, "key": None}, r"etcd refused the TLS client certificate"),
        ({"ca": "OTHER"}, r"server's TLS certificate is not trusted"),
        ({"ca": None}, r"server's TLS certificate is not trusted"),
    ],
    ids=["certificate-but-no-user", "no-client-certificate", "wrong-ca", "system-cas"],
)
def test_clients_without_the_right_credentials_are_refused_at_once(
    secure: LocalEtcdCluster, tmp_path: Path, change: dict[str, str | None], message: str
) -> None:
    if change.get("ca") == "OTHER":
        change = {"ca": str(make_pki(tmp_path / "other", {}).ca)}
    access = replace(secure.access(), **change)  # type: ignore[arg-type]
    with pytest.raises(StoreAuthError, match=message) as info:
        store = EtcdStore.connect(access, retry_deadline_s=5)
        try:
            store.get(Keys.ROOT + "x")
        finally:
            store.close()
    assert "\n" not in str(info.value)


def test_plain_http_client_gets_nothing(secure: LocalEtcdCluster) -> None:
    plain = EtcdStore.connect(
        secure.endpoints.replace("https://", "http://"), request_timeout_s=0.5, retry_deadline_s=1
    )
    try:
        with pytest.raises(StoreUnavailable):
            plain.get(Keys.ROOT + "x")
    finally:
        plain.close()


def test_cli_admin_commands_work_with_env_and_with_options(secure: LocalEtcdCluster) -> None:
    a = secure.access()
    assert a.ca and a.cert and a.key and a.user and a.password_file and a.endpoints
    created = run_console("pool", "new", "sec-pool", "--site", "sec-site", env=_env(a))
    assert created.returncode == 0, created.stderr
    options = ["--etcd", a.endpoints, "--etcd-ca", a.ca, "--etcd-cert", a.cert, "--etcd-key", a.key]
    options += ["--etcd-user", a.user, "--etcd-password-file", a.password_file]
    shown = run_console(*options, "pool", "get", "sec-pool", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)[0]["site"] == "sec-site", shown.stderr
    status = run_console(*options, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert "sec-pool" in status.stdout and '"healthy": true' in status.stdout  # /health over https with our cert
    removed = run_console("pool", "remove", "sec-pool", env=_env(a))
    assert removed.returncode == 0, removed.stderr


def test_passwords_come_only_from_a_private_file_or_the_environment(secure: LocalEtcdCluster, tmp_path: Path) -> None:
    a = secure.access()
    assert a.password_file is not None
    for argv in (["--etcd-password", "s3cret"], ["--etcd-password=s3cret"], ["--etcd-pass", "s3cret"]):
        on_command_line = run_console(*argv, "orbit", "get", env=_env(a))
        assert on_command_line.returncode == 2 and "s3cret" not in on_command_line.stderr, argv
        assert "never taken on the command line" in on_command_line.stderr or "ambiguous" in on_command_line.stderr
    readable = _password_file(tmp_path / "world", Path(a.password_file).read_text().strip(), mode=0o644)
    result = run_console("orbit", "get", env={**_env(a), "CALLPARK_ETCD_PASSWORD_FILE": readable})
    assert result.returncode == 3 and "readable by others (mode 0644)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    from_env = {k: v for k, v in _env(a).items() if k != "CALLPARK_ETCD_PASSWORD_FILE"}
    from_env["CALLPARK_ETCD_PASSWORD"] = Path(a.password_file).read_text().strip()
    ok = run_console("orbit", "get", "--json", env=from_env)
    assert ok.returncode == 0, ok.stderr
    no_password = {k: v for k, v in from_env.items() if k != "CALLPARK_ETCD_PASSWORD"}
    missing = run_console("orbit", "get", env=no_password)
    assert missing.returncode == 3 and "has no password" in missing.stderr


def test_half_given_settings_are_refused_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(EtcdAccessError, match="give both --etcd-cert and --etcd-key"):
        EtcdAccess(endpoints="https://127.0.0.1:1", cert=str(tmp_path)).validate()
    with pytest.raises(EtcdAccessError, match=r"--etcd-ca /nonexistent/ca.crt: cannot read it"):
        EtcdAccess(endpoints="https://127.0.0.1:1", ca="/nonexistent/ca.crt").validate()
    with pytest.raises(StoreError, match="TLS files given but the endpoints are http://"):
        EtcdStore.connect(EtcdAccess(endpoints="http://127.0.0.1:1", ca=__file__))


def test_deployment_etcd_section_is_validated(tmp_path: Path) -> None:
    def load(section: str) -> deployment.Deployment:
        path = tmp_path / "d.toml"
        path.write_text(f"[etcd]\n{section}\n")
        return deployment.load(path)

    dep = load('tls = true\nauth = true\nca = "pki/ca.crt"\nuser = "callpark"\npassword_file = "pw"')
    assert dep.etcd.tls and dep.etcd.auth and dep.etcd.ca == str(tmp_path / "pki" / "ca.crt")
    cases = {
        'password = "hunter2"': "never in the file; name a file with password_file",
        'tls = "yes"': "[etcd] tls must be true or false",
        'cert = "c.pem"': "[etcd] cert and key go together",
        'user = "callpark"': "[etcd] user and password_file go together",
        'endpoints = "http://e:2379"\nca = "ca.pem"': "must be https:// URLs",
        "tsl = true": "unknown [etcd] key(s): tsl",
    }
    for section, message in cases.items():
        with pytest.raises(deployment.DeploymentError, match="^" + str(tmp_path / "d.toml").replace(".", r"\.")) as e:
            load(section)
        assert message in str(e.value) and "\n" not in str(e.value)


def test_expired_token_is_renewed_transparently(tmp_path: Path) -> None:
    """Simple tokens expire after --auth-token-ttl without use; etcd then says "invalid auth token"."""
    with LocalEtcdCluster(tmp_path, members=1, tls=True, auth=True, auth_token_ttl_s=1, log_level="info") as cluster:
        store = EtcdStore.connect(cluster.access(), retry_deadline_s=5)
        try:
            store.txn([], [Put(Keys.ROOT + "t", b"1")])
            assert store.authentications == 1
            log = cluster.members[0].log_path
            before = log.read_text().count("deleted a simple token")
            # the token unused: etcd deletes it after the TTL and logs it
            wait_until(
                lambda: log.read_text().count("deleted a simple token") > before,
                timeout=20,
                what="etcd to expire the idle token",
            )
            assert store.get(Keys.ROOT + "t") is not None
            assert store.authentications == 2
            store.txn([], [Put(Keys.ROOT + "t", b"2")])  # a write with the fresh token
            entry = store.get(Keys.ROOT + "t")
            assert entry is not None and entry.value == b"2" and store.authentications == 2
        finally:
            store.close()
