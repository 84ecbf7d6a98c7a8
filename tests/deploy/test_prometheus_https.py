"""deploy/prometheus with HTTPS: the commented ``[https]`` lines, uncommented, make a valid
configuration, and a real Prometheus scrapes a real HTTPS metrics server with it."""

from __future__ import annotations

import json
import re
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from callpark.httpapi import NodeHttp
from callpark.httpserver import server_context
from callpark.lab.tls import make_pki
from callpark.netutil import free_port
from callpark.procs import ManagedProcess
from callpark.waiting import wait_until
from tests.deploy.promql import PROMETHEUS_DIR
from tests.deploy.test_prometheus import needs_promtool, out, promtool

PROMETHEUS = shutil.which("prometheus")


def https_copy(tmp_path: Path, ca: Path) -> Path:
    """deploy/prometheus copied with the ``[https]`` lines uncommented and ca_file set to ``ca``."""
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, copy)
    text = (copy / "prometheus.yml").read_text(encoding="utf-8")
    text, count = re.subn(r"(?m)^(\s*)# (.*)  # \[https\]$", r"\1\2", text)
    assert count == 6, "three [https] lines in each of the node and controller jobs"
    text = re.sub(r"ca_file: \S+", f"ca_file: {ca}", text)
    (copy / "prometheus.yml").write_text(text, encoding="utf-8")
    return copy


@needs_promtool
def test_the_https_lines_make_a_valid_configuration(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", {})
    result = promtool("check", "config", "prometheus.yml", cwd=https_copy(tmp_path, pki.ca))
    assert result.returncode == 0, out(result)


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (scripts/bootstrap.sh installs it)")
def test_prometheus_scrapes_a_node_over_https(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki", {})
    registry = CollectorRegistry()
    Counter("callpark_https_probe", "scraped over HTTPS", registry=registry).inc()
    api = NodeHttp(
        "127.0.0.1",
        0,
        registry=registry,
        healthy=lambda: (True, "ok"),
        ready=lambda: (True, "ok"),
        api={},
        tls=server_context(pki.service.cert, pki.service.key),
    )
    api.start()
    copy = https_copy(tmp_path, pki.ca)
    targets = [{"targets": [f"127.0.0.1:{api.port}"], "labels": {"site": "primary"}}]
    (copy / "targets" / "nodes.json").write_text(json.dumps(targets), encoding="utf-8")
    for name in ("controllers", "edges", "etcd"):
        (copy / "targets" / f"{name}.json").write_text("[]", encoding="utf-8")
    port = free_port()
    assert PROMETHEUS is not None
    prom = ManagedProcess(
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={copy / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        log_path=tmp_path / "prometheus.log",
    )
    prom.start()
    try:
        query = urllib.parse.quote('callpark_https_probe_total{job="callpark-node"}')

        def scraped() -> bool:
            prom.check_running()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?query={query}", timeout=2) as r:
                    return bool(json.loads(r.read())["data"]["result"])
            except OSError:
                return False

        wait_until(scraped, timeout=30, what="Prometheus to scrape the HTTPS node")
    finally:
        prom.stop()
        api.stop()
