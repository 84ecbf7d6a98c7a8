"""``[sip_tls]`` and ``[http]`` in deployment files, certificate expiry warnings, lab certificate
lifetime: one-line errors from ``callpark config check`` (real process, real openssl certificates)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from callpark import certs, deployment
from callpark.lab.tls import VALID_DAYS, Pki, make_pki
from tests.conftest import run_console

POOL = "[[pool]]\nname='a'\nsite='s'\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki") / "tls", {})


@pytest.fixture
def files(tmp_path: Path, pki: Pki) -> Path:
    """A deployment directory holding the service certificate, its key, the CA and a token."""
    for src, name in ((pki.service.cert, "svc.crt"), (pki.service.key, "svc.key"), (pki.ca, "ca.crt")):
        shutil.copy(src, tmp_path / name)
    (tmp_path / "svc.key").chmod(0o600)
    (tmp_path / "admin.token").write_text("tok-0123456789abcdef0123\n")
    (tmp_path / "admin.token").chmod(0o600)
    return tmp_path


def check(directory: Path, text: str, *extra: str) -> tuple[int, str]:
    path = directory / "d.toml"
    path.write_text(POOL + text)
    done = run_console("config", "check", str(path), *extra)
    return done.returncode, done.stderr


def test_a_secured_exposed_deployment_passes(files: Path) -> None:
    text = (
        "[edge]\nhosts=['192.0.2.10']\n[security]\ntrusted_peers=['192.0.2.0/24']\nregister_peers=['192.0.2.0/24']\n"
        "[sip_tls]\nport=5061\ncert='svc.crt'\nkey='svc.key'\n"
        "[http]\nadmin_token_file='admin.token'\ncert='svc.crt'\nkey='svc.key'\nca='ca.crt'\n"
    )
    assert check(files, text) == (0, "")
    dep = deployment.load(files / "d.toml")
    assert dep.encryption.http.https and dep.encryption.sip_tls is not None
    assert dep.encryption.sip_tls.port == 5061 and dep.encryption.sip_tls.cert == files / "svc.crt"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[edge]\nhosts=['192.0.2.10']\n[security]\ntrusted_peers=['192.0.2.0/24']\nregister_peers=['192.0.2.0/24']\n[http]\nadmin_token_file='admin.token'\n",
            "[config-plain-http-token] the SIP edge listens on 192.0.2.10, not loopback, and [http] sets an admin token"
            " but no HTTPS",
        ),
        (
            "[edge]\nhosts=['192.0.2.10']\n[security]\ntrusted_peers=['192.0.2.0/24']\nregister_peers=['192.0.2.0/24']\n[sip_tls]\nport=5061\n",
            "[config-tls] the SIP edge listens on 192.0.2.10: [sip_tls] needs cert and key there",
        ),
        ("[sip_tls]\ncert='svc.crt'\n", "[config-tls] [sip_tls] cert and key go together"),
        ("[sip_tls]\nport=70000\n", "[config-tls] [sip_tls] port must be 0 (any free port) to 65535"),
        ("[sip_tls]\nportt=5061\n", "[config-unknown] unknown [sip_tls] key(s): portt"),
        ("[http]\ncert='nope.crt'\nkey='svc.key'\n", "[config-tls] [http] cert {dir}/nope.crt: no such file"),
        ("[http]\ncert='svc.key'\nkey='svc.key'\n", "[http] certificate {dir}/svc.key: not a PEM certificate"),
        ("[http]\nhttps='yes'\n", "[config-type] [http] https must be true or false"),
    ],
)
def test_bad_sections_are_one_line_naming_the_problem(files: Path, text: str, expected: str) -> None:
    code, err = check(files, text)
    assert code == 1 and err.count("\n") == 1, err
    assert expected.format(dir=files) in err, err


def test_a_key_readable_by_others_is_refused(files: Path) -> None:
    (files / "svc.key").chmod(0o644)
    code, err = check(files, "[http]\ncert='svc.crt'\nkey='svc.key'\n")
    assert code == 1 and f"[http] key {files}/svc.key is readable by others: chmod 600 it" in err


def test_a_token_over_plain_http_on_loopback_is_allowed(files: Path) -> None:
    assert check(files, "[http]\nadmin_token_file='admin.token'\n") == (0, "")


def test_config_check_warns_about_a_certificate_that_expires_soon(tmp_path: Path) -> None:
    short = make_pki(tmp_path / "short", {}, days=5)
    shutil.copy(short.service.cert, tmp_path / "svc.crt")
    shutil.copy(short.service.key, tmp_path / "svc.key")
    (tmp_path / "svc.key").chmod(0o600)
    code, err = check(tmp_path, "[sip_tls]\ncert='svc.crt'\nkey='svc.key'\n")
    assert code == 0 and err.count("\n") == 1, err
    assert err.startswith(f"warning: certificate {tmp_path}/svc.crt (SIP/TLS at the edge) expires in 4 days (")
    assert check(tmp_path, "[sip_tls]\ncert='svc.crt'\nkey='svc.key'\n", "--cert-warning-days", "3") == (0, "")


def test_lab_certificates_live_825_days(pki: Pki) -> None:
    assert VALID_DAYS == 825
    for path in (pki.ca, pki.server.cert, pki.peer.cert, pki.service.cert):
        assert 824 < certs.read_cert(path).days_left() <= 825
    assert certs.expiry_warning(pki.service.cert, "x") is None
    assert certs.expiry_warning(pki.service.cert, "x", days=900) is not None
    expired = certs.expiry_warning(pki.service.cert, "HTTPS", now=certs.read_cert(pki.service.cert).not_after + 1)
    assert expired is not None and "expired on" in expired
