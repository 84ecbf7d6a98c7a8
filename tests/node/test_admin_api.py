"""The node's HTTP admin writes against a real node and etcd: read-only without a token,
401/403 without the right one, drain and cancel with it, and the token never shows."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry

from callpark.httpapi import NodeHttp
from callpark.lab.nodeproc import NodeProcess
from callpark.store.schema import Keys
from callpark.waiting import wait_until
from tests.conftest import run_console
from tests.node.conftest import POOL, ParkLab

TOKEN = "tok-3f9c1e7a5b2d4c6e8f0a1b2c3d4e5f60"


def write_token(path: Path, token: str = TOKEN, mode: int = 0o600) -> Path:
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


def request(port: int, method: str, path: str, token: str | None = None) -> tuple[int, str, dict[str, str]]:
    """(status, body, headers) of one HTTP request to 127.0.0.1:port."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status), resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(), dict(exc.headers)


def start_node(lab: ParkLab, name: str, *extra: str, verbose: bool = False) -> NodeProcess:
    node = NodeProcess(etcd=lab.endpoints, pool=POOL, name=name, run_dir=lab.root / name, workers=1, extra=list(extra))
    if verbose:  # debug logging: the most the node can ever log
        node.process.argv.insert(node.process.argv.index("node"), "-vv")
    lab.nodes.append(node)  # stopped by PID in the fixture, even on failure
    return node.start()


def test_without_a_token_every_write_is_405_and_reads_stay_open(lab: ParkLab) -> None:
    lab.configure()
    node = lab.node()
    for method, path in (("POST", "/api/drain"), ("DELETE", "/api/drain"), ("PUT", "/api/node"), ("POST", "/x")):
        code, body, headers = request(node.http_port, method, path, token=TOKEN)
        assert (code, headers.get("Allow")) == (405, "GET"), (method, path)
        assert body == "read-only API: no admin token is configured\n"
    assert node.get("/api/node")[0] == 200 and node.get("/readyz")[0] == 200
    assert lab.store.get(Keys.drain(POOL, "n1")) is None


def test_with_a_token_drain_needs_it_and_works(lab: ParkLab, tmp_path: Path) -> None:
    lab.configure()
    node = start_node(lab, "n1", "--admin-token-file", str(write_token(tmp_path / "token")))
    port = node.http_port
    code, body, headers = request(port, "POST", "/api/drain")
    assert code == 401 and headers["WWW-Authenticate"] == 'Bearer realm="callpark-admin"'
    assert request(port, "POST", "/api/drain", token=TOKEN[:-1] + "x")[0] == 403
    assert request(port, "POST", "/api/drain", token=TOKEN + "x")[0] == 403
    assert request(port, "POST", "/api/nothing", token=TOKEN)[0] == 404
    code, _, headers = request(port, "PUT", "/api/drain", token=TOKEN)
    assert code == 405 and headers["Allow"] == "DELETE, POST"
    assert lab.store.get(Keys.drain(POOL, "n1")) is None, "refused writes change nothing"
    assert node.get("/readyz")[0] == 200

    code, body, _ = request(port, "POST", "/api/drain", token=TOKEN)
    assert code == 202 and json.loads(body)["draining"] is True
    wait_until(lambda: node.get("/readyz")[0] == 503, timeout=5, what="node draining")
    assert node.get("/readyz")[1].startswith("draining")
    code, body, _ = request(port, "DELETE", "/api/drain", token=TOKEN)
    assert code == 200 and json.loads(body)["draining"] is False
    wait_until(lambda: node.get("/readyz")[0] == 200, timeout=5, what="node ready again")


def test_parked_calls_are_served_only_with_the_token_and_monitoring_stays_open(lab: ParkLab, tmp_path: Path) -> None:
    lab.configure()
    open_node = lab.node()
    code, body, _ = request(open_node.http_port, "GET", "/api/parked", token=TOKEN)
    assert (code, body) == (403, "/api/parked names callers and parkers: it needs an admin token\n")
    for path in ("/metrics", "/healthz", "/readyz", "/api/node"):
        assert open_node.get(path)[0] == 200, path
    node = start_node(lab, "n2", "--admin-token-file", str(write_token(tmp_path / "token")))
    code, _, headers = request(node.http_port, "GET", "/api/parked")
    assert code == 401 and headers["WWW-Authenticate"] == 'Bearer realm="callpark-admin"'
    assert request(node.http_port, "GET", "/api/parked", token=TOKEN + "x")[0] == 403
    code, body, _ = request(node.http_port, "GET", "/api/parked", token=TOKEN)
    assert code == 200 and json.loads(body) == []
    for path in ("/metrics", "/healthz", "/readyz", "/api/node"):
        assert node.get(path)[0] == 200, path


def test_idle_connections_are_closed_and_real_requests_still_answered() -> None:
    """Slowloris: 40 connections that send nothing (or half a request line) hold no thread for
    ever; a real request is answered meanwhile and every idle one is closed after the time-out."""
    http = NodeHttp(
        "127.0.0.1",
        0,
        registry=CollectorRegistry(),
        healthy=lambda: (True, "ok"),
        ready=lambda: (True, "ready"),
        api={},
        timeout_s=2.0,
    )
    http.start()
    idle: list[socket.socket] = []
    try:
        for i in range(40):
            conn = socket.create_connection(("127.0.0.1", http.port), timeout=5)
            if i % 2:
                conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x")  # never finished
            idle.append(conn)
        began = time.monotonic()
        code, body, _ = request(http.port, "GET", "/healthz")
        assert (code, body) == (200, "ok\n") and time.monotonic() - began < 1.5  # not after the time-out
        for conn in idle:
            conn.settimeout(5)
            assert conn.recv(1024) == b"", "an idle connection stayed open"
        assert time.monotonic() - began < 6.0
    finally:
        for conn in idle:
            conn.close()
        http.stop()


def test_the_token_never_appears_in_logs_metrics_api_or_errors(lab: ParkLab, tmp_path: Path) -> None:
    lab.configure()
    node = start_node(lab, "n1", "--admin-token-file", str(write_token(tmp_path / "token")), verbose=True)
    port = node.http_port
    seen: list[str] = []
    for token in (None, "wrong-token-0123456789", TOKEN + "x", TOKEN[:-1], TOKEN):
        for method, path in (("POST", "/api/drain"), ("POST", "/api/nope?pool=a"), ("PUT", "/api/drain")):
            seen.append(request(port, method, path, token=token)[1])
    assert request(port, "DELETE", "/api/drain", token=TOKEN)[0] == 200
    for path in ("/metrics", "/api/node", "/api/parked", "/healthz", "/readyz", "/nope"):
        seen.append(node.get(path)[1])
    for token in (None, "wrong-token-0123456789", TOKEN):
        seen.append(request(port, "GET", "/api/parked", token=token)[1])
    cmdline = Path(f"/proc/{node.pid}/cmdline").read_bytes().decode(errors="replace")
    logs = "".join(p.read_text(errors="replace") for p in sorted(node.run_dir.glob("*.log")))
    # the logs were captured at debug level and do record the admin traffic...
    assert "admin write refused (wrong token)" in logs and "admin write refused (no bearer token)" in logs
    assert "'/api/drain': 202" in logs and "http: " in logs
    # ...and nothing, anywhere, contains the token or a long piece of it
    for where, text in [("cmdline", cmdline), ("logs", logs), *(("http", s) for s in seen)]:
        assert TOKEN not in text and TOKEN[4:24] not in text, where
    assert str(tmp_path / "token") in cmdline  # the file name is fine; its content is not


def test_an_unusable_token_file_stops_the_node_with_one_line(tmp_path: Path) -> None:
    cases = {
        "missing": (tmp_path / "absent", "cannot read it"),
        "world-readable": (write_token(tmp_path / "open", mode=0o644), "readable or writable by others"),
        "short": (write_token(tmp_path / "short", token="abc"), "16 to 4096 characters"),
        "spaces": (write_token(tmp_path / "spaces", token="a b c d e f g h i j"), "printable ASCII"),
    }
    for case, (path, message) in cases.items():
        result = run_console(
            "--etcd",
            "http://127.0.0.1:1",
            "node",
            "--pool",
            POOL,
            "--name",
            "n1",
            env={"CALLPARK_ADMIN_TOKEN_FILE": str(path)},
        )
        assert result.returncode == 1, case
        assert result.stderr.count("\n") == 1 and message in result.stderr, (case, result.stderr)
        assert "abc" not in result.stderr and "a b c" not in result.stderr
