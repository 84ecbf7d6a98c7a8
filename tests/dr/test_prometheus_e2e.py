"""A real Prometheus scrapes a running local cluster; the primary pool is killed; the
pool-down and failover series and alerts must appear through Prometheus's HTTP API.

The shipped alert rules (deploy/prometheus/alerts.yml) are loaded unchanged; only the
scrape and evaluation intervals are shortened to 1 s.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callpark import deployment
from callpark.lab.localcluster import LocalCluster
from callpark.netutil import free_port
from callpark.procs import ManagedProcess
from callpark.waiting import wait_until

REPO = Path(__file__).resolve().parent.parent.parent
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus")

pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus (Debian package) is not installed")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(deployment.load(deployment.DEFAULT_LOCAL_FILE), tmp_path / "cluster")
    try:
        c.start()
        yield c
    finally:
        c.stop()


def api(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]


def test_prometheus_sees_the_pool_go_down_and_the_failover(cluster: LocalCluster, tmp_path: Path) -> None:
    assert PROMETHEUS is not None
    port = free_port()
    nodes = [f"127.0.0.1:{n.http_port}" for n in cluster.all_nodes()]
    controllers = [f"127.0.0.1:{c.info['http']}" for c in cluster.controllers]
    etcd = [u.removeprefix("http://") for u in cluster.endpoints.split(",")]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "callpark-node", "static_configs": [{"targets": nodes}]},
            {"job_name": "callpark-controller", "static_configs": [{"targets": controllers}]},
            {"job_name": "etcd", "static_configs": [{"targets": etcd}]},
        ],
    }
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(json.dumps(config))  # JSON is YAML
    prom = ManagedProcess(
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        log_path=tmp_path / "prometheus.log",
    ).start()
    try:
        wait_until(
            lambda: (
                len([t for t in api(port, "targets")["activeTargets"] if t["health"] == "up"])
                == len(nodes) + len(controllers) + len(etcd)
            ),
            timeout=30,
            what="every target scraped",
        )
        up = api(port, "query", query='callpark_pool_up{pool="pool-a"}')["result"]
        assert up and all(r["value"][1] == "1" for r in up)
        killed = time.monotonic()
        for node in cluster.nodes["pool-a"]:
            node.kill9()

        def seen(query: str) -> float | None:
            return time.monotonic() - killed if api(port, "query", query=query)["result"] else None

        down_after = wait_until(
            lambda: seen('callpark_pool_up{pool="pool-a"} == 0 and on (instance) callpark_controller_leader == 1'),
            timeout=30,
            what="pool-a down in Prometheus",
        )
        failover_after = wait_until(
            lambda: seen('callpark_failovers_total{kind="failover",pool="pool-a"} > 0'),
            timeout=30,
            what="the failover counter in Prometheus",
        )
        owner_after = wait_until(
            lambda: seen('callpark_range_owner{range="pool-a-park",pool="pool-b"} == 1'),
            timeout=30,
            what="the range owner moved in Prometheus",
        )

        def alert(name: str, state: str) -> float | None:
            for a in api(port, "alerts")["alerts"]:
                if a["labels"].get("alertname") == name and a["state"] == state:
                    return time.monotonic() - killed
            return None

        failover_alert = wait_until(lambda: alert("CallparkFailover", "firing"), timeout=30, what="CallparkFailover")
        pending = wait_until(lambda: alert("CallparkPoolDown", "pending"), timeout=30, what="CallparkPoolDown pending")
        firing = wait_until(lambda: alert("CallparkPoolDown", "firing"), timeout=60, what="CallparkPoolDown firing")
        print(
            f"\nPrometheus saw, after kill -9 of pool-a: pool_up=0 at {down_after:.1f}s, "
            f"failovers_total at {failover_after:.1f}s, range owner pool-b at {owner_after:.1f}s; "
            f"alerts CallparkFailover firing at {failover_alert:.1f}s, CallparkPoolDown pending at {pending:.1f}s "
            f"and firing at {firing:.1f}s (for: 30s)"
        )
    finally:
        prom.stop()
