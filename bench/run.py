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
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import report
from bench.lab import BenchLab, port_is_free
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
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="where JSON results go")
    p.add_argument("--keep", action="store_true", help="keep the run directory (logs of node and phones)")
    p.add_argument("--quick", action="store_true", help="a smoke run: levels 3,9, 8 samples, 4 s throughput")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.levels, args.samples, args.harness_samples = "3,9", 8, 5
        args.lanes, args.throughput_seconds, args.cost_window = 4, 4.0, 2.0
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    topo = Topology(max_background=max(args.level_list), lanes=args.lanes)
    if topo.workers > MAX_WORKERS:
        raise SystemExit(
            f"{topo.workers} workers needed ({max(args.level_list)} background calls at {PARKED_PER_WORKER} per "
            f"worker, plus lanes and a measuring worker), but a node takes at most {MAX_WORKERS}"
        )
    parker_port = args.parker_port
    told = True
    if parker_port and not port_is_free(parker_port):
        log.warning("port %d is busy: 'parker told the orbit' will not be measured", parker_port)
        parker_port, told = 0, False
    elif not parker_port:
        told = False
    root = Path(tempfile.mkdtemp(prefix="callpark-bench-"))
    result: dict[str, Any] = {
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
    lab = BenchLab(root)
    problems: list[str] = []
    try:
        _phase("etcd", started)
        lab.start_etcd()
        _phase(f"node with {topo.workers} workers", started)
        lab.start_node(topo.workers)
        _phase("phones", started)
        parker = lab.phone("parker", sip_port=parker_port or None)
        caller, retriever = lab.phones_named(["caller", "retriever"], auto_answer=False)
        caller.set_auto_answer(200)
        lanes = lab.phones_named([f"lane{i}" for i in range(args.lanes)])
        bg_phones = lab.phones_named([f"bg{i}" for i in range(topo.background_phones)])
        all_phones = [parker, caller, retriever, *lanes, *bg_phones]
        result["setup_s"] = round(time.monotonic() - started, 2)

        _phase("harness overhead", started)
        result["harness"] = harness_overhead(retriever, caller, args.harness_samples)

        levels: list[dict[str, Any]] = []
        time.sleep(1.0)
        _phase("cost, 0 parked", started)
        levels.append(cost_sample(lab, 0, args.cost_window, all_phones))
        background = Background(bg_phones)
        result["fill_s"] = {}
        result["latency"] = {}
        for level in args.level_list:
            _phase(f"fill to {level} parked", started)
            result["fill_s"][str(level)] = round(background.fill(lab, level), 2)
            time.sleep(1.5)
            _phase(f"cost, {level} parked", started)
            levels.append(cost_sample(lab, level, args.cost_window, all_phones))
            _phase(f"park/retrieve latency, {level} parked", started)
            result["latency"][str(level)] = latency_run(
                lab,
                parker,
                caller,
                retriever,
                topo.measure_workers,
                samples=args.samples,
                told=told,
                deadline_s=max(30.0, args.samples * 1.0),
            )
            time.sleep(0.5)
            result["latency"][str(level)]["slots_after"] = slot_check(lab, topo, level)
        per_call = cost_per_call(levels)
        capacity: dict[str, Any] = {"by_worker_cap": MAX_WORKERS * PARKED_PER_WORKER}
        if per_call:
            top = per_call[-1]
            cpu = top.get("amortised_busy_cpu_pct_per_call")
            if cpu:
                capacity["by_cpu"] = int(200.0 / cpu)
                capacity["note"] = "2 cores (200 % of a core) / amortised CPU per call at the largest level"
        result["cost"] = {"levels": levels, "per_call": per_call, "capacity": capacity}
        _phase("music check", started)
        try:
            result["music"] = background.music_check()
        except (OSError, ValueError, EOFError) as exc:
            result["music"] = {"checked": False, "error": str(exc)}

        _phase(f"sustained parks for {args.throughput_seconds:.0f}s", started)
        result["throughput_background"] = max(args.level_list)
        result["throughput"] = throughput_run(
            lab, lanes, topo.lane_workers, args.throughput_seconds, args.lane_rate, others=all_phones
        )
        time.sleep(0.5)
        result["throughput"]["slots_after"] = slot_check(lab, topo, max(args.level_list))
        _phase("stopping", started)
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
