"""The chaos smoke set, as CI runs it: every nemesis at least once, fixed seeds, real processes.

Each scenario runs ``callpark chaos run`` in its own process (which moves itself into a
private network namespace) and must pass every invariant. A failing run keeps its
folder under ``$CALLPARK_CHAOS_ARTIFACTS`` (default /tmp/callpark-chaos-artifacts) and
the assertion message carries the command that reproduces it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from callpark.chaos import netns, scenarios
from callpark.waiting import timeout_multiplier

pytestmark = pytest.mark.timeout(900)

ARTIFACTS = Path(os.environ.get("CALLPARK_CHAOS_ARTIFACTS", "/tmp/callpark-chaos-artifacts"))


def _run(scenario: str, seed: int, out: Path) -> tuple[int, str]:
    argv = [sys.executable, "-m", "callpark.cli.app", "chaos", "run", "--scenario", scenario, "--seed", str(seed)]
    proc = subprocess.Popen(
        [*argv, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        text, _ = proc.communicate(timeout=600 * timeout_multiplier())
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the run stops its cluster and phones on SIGTERM
        try:
            text, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            text, _ = proc.communicate()
        text += "\n(chaos run timed out)"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, text


@pytest.mark.parametrize(("scenario", "seed"), scenarios.SMOKE, ids=[s for s, _ in scenarios.SMOKE])
def test_smoke_scenario_holds_every_invariant(scenario: str, seed: int, tmp_path: Path) -> None:
    try:
        netns.check_available()
    except netns.NetnsUnavailable as exc:
        pytest.skip(f"chaos smoke needs a private network namespace: {exc}")
    out = tmp_path / f"{scenario}-{seed}"
    code, text = _run(scenario, seed, out)
    print(text)
    verdict = json.loads((out / "verdict.json").read_text()) if (out / "verdict.json").exists() else {}
    if code != 0 or not verdict.get("ok"):
        keep = ARTIFACTS / f"{scenario}-{seed}"
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(out, keep, symlinks=True, ignore_dangling_symlinks=True)
        pytest.fail(
            f"chaos scenario {scenario} failed (exit {code}); artifacts kept in {keep}; reproduce with: "
            f"callpark chaos run --scenario {scenario} --seed {seed}\n{text[-3000:]}"
        )
    faults = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines() if '"fault"' in line]
    injected = sorted({f["fault"] for f in faults if f.get("op") == "fault"})
    assert injected == sorted(scenarios.nemeses_of(scenario)), injected
    assert verdict["numbers"]["parks_ok"] > 0 and verdict["numbers"]["calls_lost"] == 0
