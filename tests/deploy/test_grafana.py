"""deploy/grafana: the dashboard is well-formed, covers what operators need, and every
PromQL expression in it parses (promtool checks them as recording rules).

That every metric it queries is exported is checked in test_metric_names.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.promql import DASHBOARD_FILE, grafana_to_promql
from tests.deploy.test_metric_names import dashboard_exprs

BOARD: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))


def all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in panels:
        found.append(panel)
        found += all_panels(panel.get("panels", []))
    return found


PANELS = all_panels(BOARD["panels"])


def test_dashboard_identity_and_variables() -> None:
    assert BOARD["uid"] == "callpark-overview" and BOARD["title"]
    variables = {v["name"]: v for v in BOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["pool"]["includeAll"] and variables["pool"]["multi"]


def test_panels_are_unique_placed_and_use_the_datasource_variable() -> None:
    ids = [p["id"] for p in PANELS]
    assert len(ids) == len(set(ids))
    for panel in PANELS:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"].strip()


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in PANELS:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def exprs_of(title_part: str) -> list[str]:
    return [t["expr"] for p in PANELS if title_part.lower() in p["title"].lower() for t in p.get("targets", [])]


@pytest.mark.parametrize(
    ("title", "must_contain"),
    [
        ("Parked calls per node", "callpark_parked_calls"),
        ("Park and retrieve rate", "rate(callpark_parks_total"),
        ("Park and retrieve rate", "rate(callpark_retrievals_total"),
        ("Park latency", "histogram_quantile(0.99, sum by (pool, le) (rate(callpark_park_latency_seconds_bucket"),
        (
            "Retrieve latency",
            "histogram_quantile(0.5, sum by (pool, le) (rate(callpark_retrieve_latency_seconds_bucket",
        ),
        ("Orbit use per range", "callpark_free_orbits"),
        ("Orbit use per range", "callpark_range_orbits"),
        ("Failovers and failbacks", "callpark_failovers_total"),
        ("Takeovers and lost calls", "callpark_takeovers_total"),
        ("Takeovers and lost calls", "callpark_lost_calls_total"),
        ("Lease validity left", "callpark_lease_remaining_seconds"),
        ("Lease keepalive", "histogram_quantile(0.99, sum by (node, le) (rate(callpark_lease_renew_seconds_bucket"),
        ("etcd requests", "callpark_etcd_errors_total"),
        ("Pools up", "callpark_pool_up"),
    ],
)
def test_required_views(title: str, must_contain: str) -> None:
    exprs = exprs_of(title)
    assert exprs, f"no panel titled like {title!r}"
    assert any(must_contain in e for e in exprs), f"{title!r}: no query with {must_contain!r}"


def test_histogram_quantiles_aggregate_by_le() -> None:
    for _, expr in dashboard_exprs():
        if "histogram_quantile" in expr:
            assert "le)" in expr and "_bucket" in expr, expr


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    """Each expression (Grafana variables replaced) becomes a recording rule for promtool."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    exprs = dashboard_exprs()
    rules = [{"record": f"dashboard:expr_{i}", "expr": grafana_to_promql(e)} for i, (_, e) in enumerate(exprs)]
    path = tmp_path / "dashboard-rules.yml"  # JSON is YAML
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout

    # and the check bites: a syntax error is reported
    rules[0]["expr"] = "sum by (pool (callpark_parked_calls)"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    broken = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert broken.returncode != 0
