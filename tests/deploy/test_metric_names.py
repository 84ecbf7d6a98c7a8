"""Every metric the dashboard and the alert rules query is one that callpark exports.

The exported set comes from the code: NodeMetrics and ControllerMetrics are instantiated,
one child of every labelled metric is created, and the sample names of the registries'
text exposition (what Prometheus scrapes, with _total, _bucket, _sum, _count, _created)
are collected. Renaming a metric in node/metrics.py or dr/controller.py without updating
deploy/ fails here.
"""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any
from unittest import mock

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from callpark.dr.controller import ControllerMetrics
from callpark.edge.metrics import edge_registry
from callpark.lab.etcd import LocalEtcdCluster
from callpark.node.metrics import NodeMetrics
from tests.deploy.promql import DASHBOARD_FILE, alert_rules, metric_names

# Series Prometheus makes itself for every scrape target (not exported by callpark).
PROMETHEUS_SYNTHETIC = frozenset({"up"})


def _children(owner: object) -> list[CollectorRegistry]:
    """Create one child of every labelled metric of ``owner``; return its registry."""
    for value in vars(owner).values():
        if isinstance(value, Counter | Gauge | Histogram):
            labelnames: tuple[str, ...] = value._labelnames
            if labelnames:
                value.labels(*("x" for _ in labelnames))
    registry = owner.registry  # type: ignore[attr-defined]
    assert isinstance(registry, CollectorRegistry)
    return [registry]


def exported_sample_names() -> set[str]:
    registries = [r for owner in (NodeMetrics("pool-x", "node-x"), ControllerMetrics()) for r in _children(owner)]
    with mock.patch("callpark.edge.metrics.jsonrpc.call", return_value=0):  # an edge that answers
        registries.append(edge_registry("unused", lambda: (0, 1.0)))
        texts = [generate_latest(registry).decode() for registry in registries]
    names: set[str] = set()
    for text in texts:
        for line in text.splitlines():
            if line and not line.startswith("#"):
                names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


EXPORTED = exported_sample_names()


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, expression) for every PromQL expression of the dashboard."""
    board: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                found.append((f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"]))
            walk(panel.get("panels", []))

    walk(board["panels"])
    for item in board.get("annotations", {}).get("list", []):
        if "expr" in item:
            found.append((f"annotation {item['name']!r}", item["expr"]))
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"\s*label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", query)
            assert m, f"variable {var['name']}: only label_values(EXPR, LABEL) queries are expected, not {query!r}"
            found.append((f"variable {var['name']!r}", m.group(1)))
    return found


def test_exported_set_is_derived_from_the_code() -> None:
    # spot checks that the derivation yields Prometheus sample names of every type
    for name in (
        "callpark_parked_calls",
        "callpark_parks_total",
        "callpark_park_latency_seconds_bucket",
        "callpark_park_latency_seconds_count",
        "callpark_lease_renew_seconds_sum",
        "callpark_controller_leader",
        "callpark_failovers_total",
        "callpark_failover_duration_seconds_bucket",
    ):
        assert name in EXPORTED, name
    assert "callpark_parks" not in EXPORTED  # counters are scraped with _total


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (pool) (rate(a_total{pool=~"$pool"}[$__rate_interval]))', {"a_total"}),
        ("histogram_quantile(0.99, sum by (le, node) (rate(b_bucket[5m]))) > 0.5", {"b_bucket"}),
        ("(x unless x offset 15m) or increase(x[15m])", {"x"}),
        ("a / on (pool, range) group_left (site) b and on (instance) c == 1", {"a", "b", "c"}),
        ('{__name__="by_name", job="x"} > bool 1e3', {"by_name"}),
        ('label_replace(up{job="etcd"}, "dst", "$1", "instance", "(.*):.*")', {"up"}),
        ("(sum(m) or vector(0)) < 1", {"m"}),
        ('max_over_time(w[30m:1m]) - min without (le) (v{le="+Inf"})', {"w", "v"}),
    ],
)
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def etcd_exported(cluster: LocalEtcdCluster) -> set[str]:
    """The sample names a real etcd member exports on its client port's /metrics."""
    with urllib.request.urlopen(cluster.members[0].client_url + "/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_alert_rule_metric_is_exported(etcd_cluster: LocalEtcdCluster) -> None:
    rules = alert_rules()
    assert rules
    known = EXPORTED | PROMETHEUS_SYNTHETIC | etcd_exported(etcd_cluster)
    unknown = {rule.name: sorted(metric_names(rule.expr) - known) for rule in rules if metric_names(rule.expr) - known}
    assert not unknown, f"alert rules query metrics callpark does not export: {unknown}"
    for rule in rules:
        assert metric_names(rule.expr), f"{rule.name}: no metric found in {rule.expr!r}"


def test_every_dashboard_metric_is_exported() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    unknown = {where: sorted(metric_names(e) - EXPORTED) for where, e in exprs if metric_names(e) - EXPORTED}
    assert not unknown, f"dashboard queries metrics callpark does not export: {unknown}"
    for where, expr in exprs:
        assert metric_names(expr), f"{where}: no metric found in {expr!r}"


def test_a_renamed_metric_is_caught() -> None:
    """The check can fail: a metric renamed in the code no longer matches the dashboard."""
    renamed = {n.replace("callpark_parked_calls", "callpark_calls_parked") for n in EXPORTED}
    missing = {where for where, e in dashboard_exprs() if "callpark_parked_calls" in metric_names(e) - renamed}
    assert missing, "renaming callpark_parked_calls should break at least one dashboard query"
