"""The README's main job: ``callpark drill`` end to end, as an operator runs it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_console


def test_default_drill_kills_the_primary_pool_and_passes(tmp_path: Path) -> None:
    report = tmp_path / "drill.json"
    result = run_console("drill", "--calls", "3", "--json", str(report), "--run-dir", str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "verdict: PASS" in result.stdout
    data = json.loads(report.read_text())
    assert data["fault"] == "pool-kill" and data["verdict"] == "PASS"
    assert data["calls_lost"] == [] and data["numbers"]["calls_lost"] == 0
    assert data["numbers"]["rto_s"] > 0 and data["numbers"]["takeover_s"] > 0
    phases = [p["phase"] for p in data["phases"]]
    assert any(p.startswith("5. failback") for p in phases)


def test_drill_refuses_bad_arguments() -> None:
    result = run_console("drill", "--calls", "50")
    assert result.returncode == 1 and "[drill-calls]" in result.stderr
    result = run_console("drill", "--fault", "meteor")
    assert result.returncode == 2
