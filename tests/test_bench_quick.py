"""`python -m bench --quick` runs end to end and writes its JSON with every figure key (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.figures import FIGURE_KEYS, figures
from callpark.waiting import timeout_multiplier

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(900)
def test_the_quick_bench_runs_and_writes_every_figure_key(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600 * timeout_multiplier(),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "latest.json").read_text())
    assert list(result["figures"]) == list(FIGURE_KEYS)
    unexplained = [k for k, v in result["figures"].items() if v is None and k not in result["figures_missing"]]
    assert not unexplained, unexplained
    assert result["scale"]["records"] == 2_000 and "Figures" in proc.stdout


def test_a_figure_not_measured_is_none_with_a_reason() -> None:
    values, missing = figures({"latency": {"3": {"park_refer_to_parker_told": {"p50_ms": 10.0, "p99_ms": 20.0}}}})
    assert values["park_p50_ms"] == 10.0 and values["parks_per_s"] is None
    assert "parks_per_s" in missing and "park_p50_ms" not in missing
    assert values["park_ratio_to_sip_floor"] is None, "no floor measured: no ratio"
