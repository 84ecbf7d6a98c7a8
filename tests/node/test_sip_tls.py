"""SIP over TLS at the edge: pjsua2 phones register, park and retrieve over TLS (real Kamailio
with the tls module, real node, real phones; certificates from the lab CA)."""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from callpark.edge import EdgeConfig, PoolSpec
from callpark.edge.config import ConfigError, EdgeTls, render_kamailio_cfg, render_tls_cfg
from callpark.lab.phone import Phone
from callpark.lab.phone.flows import blind_park, connected_call, hears_music
from callpark.lab.tls import Pki, make_pki
from callpark.netutil import LOOPBACK, free_port
from tests.node.conftest import ParkLab
from tests.node.helpers import check_retrieved


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki") / "tls", {})


def _tls_phone(lab: ParkLab, user: str, address: str, ca: Path, **kwargs: object) -> Phone:
    tls = ["--tls-ca", str(ca)]  # registrar and proxy over SIP/TLS, trusting the lab CA
    phone = Phone(user, log_dir=lab.root / "phones", registrar=address, proxy=address, extra_args=tls, **kwargs)  # type: ignore[arg-type]
    lab.phones.append(phone)  # stopped by PID in the fixture
    phone.start()
    phone.register(timeout=10)
    return phone


def test_phones_register_park_and_retrieve_over_tls(lab: ParkLab, pki: Pki) -> None:
    lab.configure()
    node = lab.node(workers=2, edge=True)
    tls_port = free_port()
    edge = lab.start_edge(tls=EdgeTls(port=tls_port, cert=pki.service.cert.resolve(), key=pki.service.key.resolve()))
    address = f"{LOOPBACK}:{tls_port}"
    parker = _tls_phone(lab, "parker", address, pki.ca)
    alice = _tls_phone(lab, "alice", address, pki.ca, auto_answer=True)
    carol = _tls_phone(lab, "carol", address, pki.ca)
    contacts = edge.registrations()
    for user in ("parker", "alice", "carol"):
        assert contacts[user] and all("transport=tls" in c.lower() for c in contacts[user]), contacts
    since = parker.mark()
    blind_park(parker, alice, f"sip:park@{LOOPBACK}", caller_uri=f"sip:alice@{LOOPBACK}")
    record = lab.wait_parked("alice")
    message = parker.wait_event(lambda e: e["event"] == "message", since=since, timeout=10, what="orbit MESSAGE")
    assert f"orbit={record['orbit']}" in message["body"]  # node -> edge (UDP) -> parker (TLS)
    assert hears_music(alice, connected_call(alice, remote_contains="park@"))
    c_since = carol.mark()
    handle = carol.call(f"sip:{record['orbit']}@{LOOPBACK}")
    carol.wait_state(handle, "CONFIRMED", since=c_since, timeout=10)
    check_retrieved(lab, node, alice, carol, record["park_id"], "ok")


def test_the_edge_speaks_tls_1_2_or_newer_with_the_configured_certificate(lab: ParkLab, pki: Pki) -> None:
    lab.configure()
    lab.node(edge=True)
    tls_port = free_port()
    lab.start_edge(tls=EdgeTls(port=tls_port, cert=pki.service.cert.resolve(), key=pki.service.key.resolve()))
    context = ssl.create_default_context(cafile=str(pki.ca))
    raw = socket.create_connection((LOOPBACK, tls_port), timeout=5)
    with raw, context.wrap_socket(raw, server_hostname=LOOPBACK) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        peer = tls.getpeercert()
        assert peer is not None and "callpark-lab-service" in str(peer["subject"])
    old = subprocess.run(
        ["openssl", "s_client", "-connect", f"{LOOPBACK}:{tls_port}", "-tls1_1", "-brief"],
        input=b"",
        capture_output=True,
        timeout=10,
        check=False,
    )
    assert old.returncode != 0, "TLS 1.1 was accepted"


def test_tls_settings_are_checked_before_rendering(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls port 0 out of range"):
        EdgeTls(port=0, cert=tmp_path / "c", key=tmp_path / "k")
    with pytest.raises(ConfigError, match="must be an absolute path"):
        EdgeTls(port=5061, cert=Path("relative.crt"), key=tmp_path / "k")
    tls = EdgeTls(port=5061, cert=tmp_path / "c.crt", key=tmp_path / "c.key")
    with pytest.raises(ConfigError, match="also the TCP port"):
        EdgeConfig(port=5061, domain="x", pools=(PoolSpec(name="a"),), tcp=True, tls=tls)
    cfg = EdgeConfig(port=5060, domain="x", pools=(PoolSpec(name="a"),), tls=tls)
    text = render_kamailio_cfg(cfg, dispatcher_list=tmp_path / "d.list", tls_file=tmp_path / "tls.cfg")
    assert "listen=tls:127.0.0.1:5061" in text and "disable_tcp=no" in text and 'loadmodule "tls.so"' in text
    assert f"certificate = {tmp_path / 'c.crt'}" in render_tls_cfg(cfg)
    with pytest.raises(ConfigError, match="absolute path of the file"):
        render_kamailio_cfg(cfg, dispatcher_list=tmp_path / "d.list")
