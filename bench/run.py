"""``python -m bench``: measure a park node on loopback, write JSON, print a table.

Phases (all against one real etcd and one real ``callpark node``, phones are pjsua2
processes driven over JSON lines):

1. harness overhead (phone to phone, no node);
2. cost with 0 calls parked;
3. for each background level (default 20 and 100): park that many calls directly
   (phones INVITE the park URI; they stay parked with music), measure cost, then run
   ``--samples`` blind parks and retrievals on a worker of their own;
4. sustained parks per second with the largest background level still parked.

Every process is stopped by PID in ``finally``; each phase is bounded in count and time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import floors, report, scale
from bench.figures import figures
from bench.lab import BenchLab, port_is_free
from bench.phones import BenchPhone
from bench.scenarios import (
    CALLS_PER_PHONE,
    PARKED_PER_WORKER,
    Background,
    Topology,
    cost_per_call,
    cost_sample,
    harness_overhead,
    latency_run,
    slot_check,
    throughput_run,
)

log = logging.getLogger("bench")

MAX_WORKERS = 64  # NodeConfig.validate(): --workers must be 1 to 64
REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--levels", default="20,100", help="background parked calls to measure at (default 20,100)")
    p.add_argument("--samples", type=int, default=50, help="blind parks + retrievals per level (default 50)")
    p.add_argument("--harness-samples", type=int, default=20, help="harness overhead samples (default 20)")
    p.add_argument("--lanes", type=int, default=8, help="concurrent parking phones for throughput (default 8)")
    p.add_argument("--throughput-seconds", type=float, default=15.0, help="sustained park run length (default 15)")
    p.add_argument(
        "--lane-rate",
        type=float,
        default=20.0,
        help="most parks per second one lane starts (default 20; a pjsua2 process aborts above ~60 call set-ups/s)",
    )
    p.add_argument("--cost-window", type=float, default=5.0, help="CPU sampling window per level, s (default 5)")
    p.add_argument(
        "--parker-port",
        type=int,
        default=5060,
        help="SIP port of the parker phone (default 5060: the node sends the orbit MESSAGE to the "
        "port-less Referred-By URI, i.e. to 5060; 0 = any port, then 'parker told' is not measured)",
    )
    p.add_argument(
        "--scale", type=int, default=50_000, help="parked-call records written directly for the scale phase (0: skip)"
    )
    p.add_argument("--floor-samples", type=int, default=200, help="guarded etcd puts for the etcd floor (default 200)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where JSON results go")
    p.add_argument("--keep", action="store_true", help="keep the run directory (logs of node and phones)")
    p.add_argument("--quick", action="store_true", help="a smoke run: levels 3,9, 8 samples, 4 s throughput")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.levels, args.samples, args.harness_samples = "3,9", 8, 5
        args.lanes, args.throughput_seconds, args.cost_window = 4, 4.0, 2.0
        args.scale, args.floor_samples = 2_000, 30
    args.level_list = sorted({int(x) for x in str(args.levels).split(",") if x.strip()})
    if not args.level_list or min(args.level_list) < 1:
        p.error("--levels needs positive numbers")
    return args


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _phase(name: str, began: float) -> None:
    log.info("[%6.1fs] %s", time.monotonic() - began, name)


def _topology(args: argparse.Namespace) -> Topology:
    """The node's shape for these levels and lanes; exits when it needs more workers than a node takes."""
    topo = Topology(max_background=max(args.level_list), lanes=args.lanes)
    if topo.workers > MAX_WORKERS:
        raise SystemExit(
            f"{topo.workers} workers needed ({max(args.level_list)} background calls at {PARKED_PER_WORKER} per "
            f"worker, plus lanes and a measuring worker), but a node takes at most {MAX_WORKERS}"
        )
    return topo


def _parker_port(args: argparse.Namespace) -> tuple[int, bool]:
    """The parker's SIP port (0: any) and whether 'parker told the orbit' can be measured."""
    parker_port = args.parker_port
    if parker_port and not port_is_free(parker_port):
        log.warning("port %d is busy: 'parker told the orbit' will not be measured", parker_port)
        return 0, False
    return parker_port, bool(parker_port)


def _preamble(args: argparse.Namespace, topo: Topology, root: Path, parker_port: int, told: bool) -> dict[str, Any]:
    """The result's first keys: meta, config, topology and targets."""
    return {
        "meta": {
            "started": dt.datetime.now().isoformat(timespec="seconds"),
            "commit": _git_commit(),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "pjsua2": _version("pjsua2-python"),
            "load_start": [round(x, 2) for x in os.getloadavg()],
            "run_dir": str(root),
        },
        "config": {
            "levels": args.level_list,
            "samples": args.samples,
            "harness_samples": args.harness_samples,
            "lanes": args.lanes,
            "throughput_seconds": args.throughput_seconds,
            "lane_rate": args.lane_rate,
            "cost_window_s": args.cost_window,
            "parker_port": parker_port,
            "parker_told_measured": told,
            "scale_records": args.scale,
            "floor_samples": args.floor_samples,
        },
        "topology": {
            "workers": topo.workers,
            "background_workers": topo.background_workers,
            "lane_workers": topo.lane_workers,
            "measure_workers": topo.measure_workers,
            "background_phones": topo.background_phones,
            "parked_per_worker": PARKED_PER_WORKER,
            "calls_per_phone": CALLS_PER_PHONE,
        },
        "targets": report.TARGETS,
    }


@dataclass
class _Phones:
    """The run's phones by role."""

    parker: BenchPhone
    caller: BenchPhone
    retriever: BenchPhone
    lanes: list[BenchPhone]
    background: list[BenchPhone]

    @property
    def all(self) -> list[BenchPhone]:
        return [self.parker, self.caller, self.retriever, *self.lanes, *self.background]


@dataclass
class _Run:
    """One run's settings, lab and result (filled phase by phase)."""

    args: argparse.Namespace
    topo: Topology
    lab: BenchLab
    parker_port: int
    told: bool
    started: float
    result: dict[str, Any]

    def phase(self, name: str) -> None:
        _phase(name, self.started)


def _start(r: _Run) -> _Phones:
    """Start etcd, the node and every phone."""
    r.phase("etcd")
    r.lab.start_etcd()
    r.phase(f"node with {r.topo.workers} workers")
    r.lab.start_node(r.topo.workers)
    r.phase("phones")
    parker = r.lab.phone("parker", sip_port=r.parker_port or None)
    caller, retriever = r.lab.phones_named(["caller", "retriever"], auto_answer=False)
    caller.set_auto_answer(200)
    lanes = r.lab.phones_named([f"lane{i}" for i in range(r.args.lanes)])
    bg_phones = r.lab.phones_named([f"bg{i}" for i in range(r.topo.background_phones)])
    return _Phones(parker, caller, retriever, lanes, bg_phones)


def _capacity(per_call: list[dict[str, Any]]) -> dict[str, Any]:
    """Calls a 2-core node holds: by the worker cap, and by CPU at the largest level."""
    capacity: dict[str, Any] = {"by_worker_cap": MAX_WORKERS * PARKED_PER_WORKER}
    if per_call:
        top = per_call[-1]
        cpu = top.get("amortised_busy_cpu_pct_per_call")
        if cpu:
            capacity["by_cpu"] = int(200.0 / cpu)
            capacity["note"] = "2 cores (200 % of a core) / amortised CPU per call at the largest level"
    return capacity


def _levels(r: _Run, phones: _Phones) -> Background:
    """Cost at 0 parked, then per level: fill, cost, park/retrieve latency and slots."""
    args, lab, result = r.args, r.lab, r.result
    levels: list[dict[str, Any]] = []
    time.sleep(1.0)
    r.phase("cost, 0 parked")
    levels.append(cost_sample(lab, 0, args.cost_window, phones.all))
    background = Background(phones.background)
    result["fill_s"] = {}
    result["latency"] = {}
    for level in args.level_list:
        r.phase(f"fill to {level} parked")
        result["fill_s"][str(level)] = round(background.fill(lab, level), 2)
        time.sleep(1.5)
        r.phase(f"cost, {level} parked")
        levels.append(cost_sample(lab, level, args.cost_window, phones.all))
        r.phase(f"park/retrieve latency, {level} parked")
        result["latency"][str(level)] = latency_run(
            lab,
            phones.parker,
            phones.caller,
            phones.retriever,
            r.topo.measure_workers,
            samples=args.samples,
            told=r.told,
            deadline_s=max(30.0, args.samples * 1.0),
        )
        time.sleep(0.5)
        result["latency"][str(level)]["slots_after"] = slot_check(lab, r.topo, level)
    per_call = cost_per_call(levels)
    result["cost"] = {"levels": levels, "per_call": per_call, "capacity": _capacity(per_call)}
    return background


def _measure(r: _Run) -> None:
    """Every phase after the preamble, results into ``r.result``."""
    args, result = r.args, r.result
    phones = _start(r)
    result["setup_s"] = round(time.monotonic() - r.started, 2)
    r.phase("harness overhead")
    result["harness"] = harness_overhead(phones.retriever, phones.caller, args.harness_samples)
    r.phase("etcd floor: guarded puts")
    assert r.lab.store is not None
    result["floors"] = {"etcd_guarded_put": floors.etcd_guarded_put(r.lab.store, args.floor_samples)}
    background = _levels(r, phones)
    r.phase("music check")
    try:
        result["music"] = background.music_check()
    except (OSError, ValueError, EOFError) as exc:
        result["music"] = {"checked": False, "error": str(exc)}
    r.phase(f"sustained parks for {args.throughput_seconds:.0f}s")
    result["throughput_background"] = max(args.level_list)
    result["throughput"] = throughput_run(
        r.lab, phones.lanes, r.topo.lane_workers, args.throughput_seconds, args.lane_rate, others=phones.all
    )
    time.sleep(0.5)
    result["throughput"]["slots_after"] = slot_check(r.lab, r.topo, max(args.level_list))
    if args.scale:
        _scale(r, phones)
    r.phase("stopping")


def _scale(r: _Run, phones: _Phones) -> None:
    """Write ``--scale`` records of a pool nobody serves; what reads and the node cost with them."""
    args, lab = r.args, r.lab
    assert lab.store is not None
    background = max(args.level_list)
    out: dict[str, Any] = {"records": args.scale, "without_records": scale.read_costs(lab.store)}
    r.phase(f"scale: writing {args.scale} parked records")
    try:
        out["write_s"] = round(scale.write_records(lab.store, args.scale), 2)
        out["with_records"] = scale.read_costs(lab.store)
        r.phase(f"scale: node cost with {args.scale} records")
        out["node_cost"] = cost_sample(lab, background, args.cost_window, phones.all)
        r.phase(f"scale: park/retrieve latency with {args.scale} records")
        samples = max(4, args.samples // 4)
        out["latency"] = latency_run(
            lab,
            phones.parker,
            phones.caller,
            phones.retriever,
            r.topo.measure_workers,
            samples=samples,
            told=r.told,
            deadline_s=max(30.0, samples * 2.0),
        )
    finally:
        scale.remove_records(lab.store, args.scale)
        r.result["scale"] = out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One benchmark run: the result as written to JSON."""
    started = time.monotonic()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    topo = _topology(args)
    parker_port, told = _parker_port(args)
    root = Path(tempfile.mkdtemp(prefix="callpark-bench-"))
    result = _preamble(args, topo, root, parker_port, told)
    lab = BenchLab(root)
    problems: list[str] = []
    try:
        _measure(_Run(args, topo, lab, parker_port, told, started, result))
    except Exception as exc:
        problems.append(f"run failed: {exc.__class__.__name__}: {str(exc)[:500]}")
        log.exception("run failed")
    finally:
        problems += lab.close()
        result["problems"] = problems
        result["meta"]["load_end"] = [round(x, 2) for x in os.getloadavg()]
        result["duration_s"] = round(time.monotonic() - started, 2)
        if args.keep:
            log.info("run directory kept: %s", root)
        else:
            _remove_tree(root)
    result["meta"]["stamp"] = stamp
    result["figures"], result["figures_missing"] = figures(result)
    return result


def _remove_tree(root: Path) -> None:
    import shutil

    shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    result = run(args)
    path, _ = report.write(result, args.out, str(result["meta"]["stamp"]))
    print(report.render(result))
    print(f"\nresults: {path}")
    return 1 if result.get("problems") else 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main"]
