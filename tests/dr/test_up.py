"""``callpark up``: the local cluster in the foreground, stopped cleanly by SIGTERM."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from callpark.procs import ManagedProcess
from callpark.waiting import wait_until


def test_up_runs_the_local_cluster_and_stops_everything_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    proc = ManagedProcess(
        "up",
        [sys.executable, "-m", "callpark.cli.app", "up", "--run-dir", str(tmp_path / "run"), "--interval", "0.5"],
        log_path=log,
    )
    proc.start()
    try:
        wait_until(lambda: "leader controller-" in log.read_text(), timeout=60, what="a status line with a leader")
        text = log.read_text()
        assert "CALLPARK_ETCD=http://127.0.0.1:" in text and "pool-a up" in text and "pool-b up" in text
        proc.signal(signal.SIGTERM)
        wait_until(lambda: not proc.is_running(), timeout=30, what="up to stop")
        assert proc.returncode() == 0
        assert "stopped" in log.read_text()
    finally:
        proc.stop()


def test_drill_stopped_by_sigterm_leaves_no_process_behind(tmp_path: Path) -> None:
    log = tmp_path / "drill.log"
    run = tmp_path / "run"
    proc = ManagedProcess(
        "drill", [sys.executable, "-m", "callpark.cli.app", "drill", "--run-dir", str(run)], log_path=log
    )
    proc.start()
    try:
        wait_until(lambda: "== 1. park" in log.read_text(), timeout=60, what="the drill to start parking")
        proc.signal(signal.SIGTERM)
        wait_until(lambda: not proc.is_running(), timeout=30, what="the drill to stop")
    finally:
        proc.stop()
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and str(run) in _cmdline(p)]
    assert not leftovers, [(p.name, _cmdline(p)) for p in leftovers]


def _cmdline(proc_dir: Path) -> str:
    try:
        return (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_up_detach_then_down(tmp_path: Path) -> None:
    from tests.conftest import run_console

    state, run = tmp_path / "up.json", tmp_path / "run"
    try:
        result = run_console("up", "--detach", "--state", str(state), "--run-dir", str(run), timeout=150)
        assert result.returncode == 0, result.stderr
        assert "CALLPARK_ETCD=http://127.0.0.1:" in result.stdout and "running in the background" in result.stdout
        again = run_console("up", "--detach", "--state", str(state), "--run-dir", str(tmp_path / "other"))
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        down = run_console("down", "--state", str(state), timeout=90)
    assert down.returncode == 0, down.stderr
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and str(run) in _cmdline(p)]
    assert not leftovers, [(p.name, _cmdline(p)) for p in leftovers]
    assert run_console("down", "--state", str(state)).returncode == 1
