"""The nodes' and controllers' HTTP server against slow clients and over HTTPS (real sockets).

Trickling clients (a byte now and then, never a whole request) are what a socket time-out does
not stop; the server caps connections per source and in total and gives each a deadline for its
whole request."""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from callpark import admintoken
from callpark.httpapi import NodeHttp
from callpark.httpserver import ConnectionLimits, HttpsError, client_context, server_context
from callpark.lab.tls import Pki, make_pki
from callpark.waiting import timeout_multiplier, wait_until

TOKEN = "tok-5d0c9a8b7e6f5a4b3c2d1e0f9a8b7c6d"


def _http(**kwargs: object) -> NodeHttp:
    return NodeHttp(
        "127.0.0.1",
        0,
        registry=CollectorRegistry(),
        healthy=lambda: (True, "ok"),
        ready=lambda: (True, "ready"),
        api={"/api/parked": lambda: [{"orbit": "7001", "caller": "sip:alice@x"}]},
        private=frozenset({"/api/parked"}),
        **kwargs,  # type: ignore[arg-type]
    )


def _healthz(port: int, source: str = "127.0.0.2", timeout: float = 5.0) -> tuple[int, bytes]:
    """GET /healthz from another loopback address than the trickling clients."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Tricklers:
    """Clients that each send one byte of a request every ``every`` seconds, for ever."""

    def __init__(self, port: int, count: int, every: float = 0.3) -> None:
        self.socks: list[socket.socket] = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            self.socks.append(sock)
        self.closed_by_server: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        payload = b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 10_000
        sent = 0
        while not self._stop.wait(every):
            for i, sock in enumerate(self.socks):
                if i in self.closed_by_server:
                    continue
                try:
                    sock.sendall(payload[sent : sent + 1])
                except OSError:
                    self.closed_by_server.add(i)
            sent += 1

    def open_count(self) -> int:
        """Connections the server has not closed (a closed one reads EOF or errors)."""
        alive = 0
        for i, sock in enumerate(self.socks):
            if i in self.closed_by_server:
                continue
            sock.setblocking(False)
            try:
                data = sock.recv(4096)
                if data == b"":
                    self.closed_by_server.add(i)
                else:
                    alive += 1
            except BlockingIOError:
                alive += 1
            except OSError:
                self.closed_by_server.add(i)
        return alive

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in self.socks:
            sock.close()


def test_trickling_clients_cannot_exhaust_threads_and_healthz_still_answers() -> None:
    """60 clients trickling a byte every 0.3 s (so the 10 s socket time-out never fires): at most
    16 hold a slot from their address (each newcomer cuts the oldest), /healthz from another
    address and then from the same one answers at once, and the survivors are cut at the
    request deadline."""
    deadline = 3.0 * timeout_multiplier()  # the request deadline under test, scaled on a loaded machine
    api = _http(limits=ConnectionLimits(connections=64, per_source=16, request_deadline_s=deadline))
    api.start()
    threads_before = threading.active_count()
    tricklers = Tricklers(api.port, 60)
    try:
        began = time.monotonic()
        wait_until(lambda: api.server.evicted >= 44, timeout=5, what="44 evictions")
        wait_until(lambda: tricklers.open_count() <= 16, timeout=5, what="44 cut")
        assert api.server.active == 16 and api.server.refused == 0
        wait_until(  # cut connections' threads end at once; +1: the trickler thread
            lambda: threading.active_count() <= threads_before + 16 + 1,
            timeout=2,
            what="no more than 16 serving threads",
        )
        assert _healthz(api.port) == (200, b"ok\n")
        assert _healthz(api.port, source="127.0.0.1") == (200, b"ok\n")  # cuts one more trickler
        assert time.monotonic() - began < deadline, "healthz had to wait for the deadline"
        wait_until(
            lambda: tricklers.open_count() == 0,
            timeout=(deadline + 5),
            what="every trickling connection to be cut",
        )
        assert api.server.expired >= 14 and api.server.evicted + api.server.expired == 60
        assert time.monotonic() - began >= deadline * 0.9  # cut by the deadline, not before
        wait_until(lambda: api.server.active == 0, timeout=5, what="slots released")
    finally:
        tricklers.stop()
        api.stop()


def test_the_cap_is_also_global_and_a_newcomer_cuts_the_oldest_trickler() -> None:
    api = _http(limits=ConnectionLimits(connections=4, per_source=4, request_deadline_s=30))
    api.start()
    tricklers = Tricklers(api.port, 4)
    try:
        wait_until(lambda: api.server.active == 4, timeout=5, what="4 connections served")
        assert _healthz(api.port) == (200, b"ok\n")  # from 127.0.0.2: the global cap, not its own
        assert api.server.evicted == 1 and api.server.refused == 0
        wait_until(lambda: 0 in tricklers.closed_by_server or tricklers.open_count() == 3, timeout=5, what="cut")
        tricklers.open_count()
        assert 0 in tricklers.closed_by_server, "the oldest trickler is the one cut"
    finally:
        tricklers.stop()
        api.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki") / "tls", {"client": "someone"})


@pytest.fixture
def https(pki: Pki, tmp_path: Path) -> Iterator[NodeHttp]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    api = _http(
        admin_token=admintoken.load(token_file),
        tls=server_context(pki.service.cert, pki.service.key),
        limits=ConnectionLimits(request_deadline_s=2.0),
    )
    api.start()
    yield api
    api.stop()


def test_https_serves_the_token_protected_api_only_over_tls(https: NodeHttp, pki: Pki) -> None:
    assert https.scheme == "https"
    base = f"https://127.0.0.1:{https.port}"
    context = client_context(pki.ca)
    with urllib.request.urlopen(f"{base}/healthz", timeout=5, context=context) as resp:
        assert resp.read() == b"ok\n"
    req = urllib.request.Request(f"{base}/api/parked", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5, context=context) as resp:
        assert b"sip:alice@x" in resp.read()
    # without our CA the server is not trusted; plain HTTP gets no answer
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{base}/healthz", timeout=5, context=ssl.create_default_context())
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        _healthz(https.port)


def test_a_stalled_tls_handshake_holds_nothing(https: NodeHttp, pki: Pki) -> None:
    """A client that connects and never says hello does not block the accept loop and is cut
    at the request deadline."""
    silent = socket.create_connection(("127.0.0.1", https.port), timeout=10)
    try:
        with urllib.request.urlopen(
            f"https://127.0.0.1:{https.port}/healthz", timeout=5, context=client_context(pki.ca)
        ) as resp:
            assert resp.status == 200
        began = time.monotonic()
        assert silent.recv(10) == b""
        assert time.monotonic() - began < 10
    finally:
        silent.close()


def test_unusable_tls_files_are_one_line_errors(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(HttpsError, match=r"certificate .*missing.crt: no such file"):
        server_context(tmp_path / "missing.crt", pki.server.key)
    with pytest.raises(HttpsError, match="unusable"):
        server_context(pki.service.cert, pki.clients["client"].key)  # key of another certificate
    (tmp_path / "junk.pem").write_text("junk\n")
    with pytest.raises(HttpsError, match="not a PEM certificate"):
        client_context(tmp_path / "junk.pem")
