"""A real node and a real controller serving their HTTP API over HTTPS (``--http-cert``,
``--http-key``): the admin token travels encrypted, plain HTTP gets nothing, and a certificate
that expires soon is reported at start."""

from __future__ import annotations

import http.client
import urllib.request
from pathlib import Path

import pytest

from callpark.httpserver import client_context
from callpark.lab.controllerproc import ControllerProcess
from callpark.lab.tls import make_pki
from callpark.store.etcd import EtcdStore
from tests.conftest import run_console
from tests.node.conftest import ParkLab
from tests.node.test_admin_api import TOKEN, write_token


def _plain_get(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        conn.getresponse()
    finally:
        conn.close()


def test_node_and_controller_serve_https_and_warn_about_a_certificate_near_its_end(
    lab: ParkLab, tmp_path: Path, etcd: EtcdStore
) -> None:
    pki = make_pki(tmp_path / "pki", {}, days=10)  # inside the 30-day warning window
    token = write_token(tmp_path / "token")
    https = ["--http-cert", str(pki.service.cert), "--http-key", str(pki.service.key)]
    lab.configure()
    node = lab.node(extra=[*https, "--admin-token-file", str(token)], http_ca=pki.ca)
    assert node.info["scheme"] == "https"
    assert node.get("/readyz")[0] == 200  # over HTTPS, verified against the lab CA
    req = urllib.request.Request(
        f"https://127.0.0.1:{node.http_port}/api/parked", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=5, context=client_context(pki.ca)) as resp:
        assert resp.status == 200
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        _plain_get(node.http_port)
    log = node.process.log_path.read_text()
    assert f"certificate {pki.service.cert} (HTTPS) expires in 9 days" in log

    controller = ControllerProcess(etcd=lab.endpoints, name="c1", run_dir=tmp_path, extra=https, http_ca=pki.ca)
    try:
        controller.start()
        assert controller.info["scheme"] == "https"
        assert controller.status() != {}  # /api/status over HTTPS
        assert "callpark_controller" in controller.metrics_text()
        with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
            _plain_get(int(controller.info["http"]))
    finally:
        controller.stop()


def test_half_an_https_pair_or_a_bad_file_stops_the_node_with_one_line(lab: ParkLab, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", {})
    lab.configure()
    base = ["--etcd", lab.endpoints, "node", "--pool", "pool-a", "--name", "bad", "--run-dir", str(tmp_path / "n")]
    for extra, expected in (
        (["--http-cert", str(pki.service.cert)], "--http-cert and --http-key go together"),
        (["--http-cert", str(pki.service.cert), "--http-key", str(tmp_path / "no.key")], "no.key: no such file"),
        (["--http-cert", str(pki.service.cert), "--http-key", str(pki.peer.key)], "unusable"),
    ):
        done = run_console(*base, *extra)
        assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert expected in done.stderr, done.stderr
