"""``callpark chaos``: run a scenario, list the nemeses, run the CI smoke set."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from callpark import tables
from callpark.chaos import netns, runner, scenarios
from callpark.cli.common import Subparsers, command, group
from callpark.errors import ValidationError


def _check(args: argparse.Namespace) -> None:
    try:
        scenarios.nemeses_of(args.scenario)
    except ValueError as exc:
        raise ValidationError("chaos-scenario", str(exc)) from None
    if args.duration < 0 or args.duration > 86400:
        raise ValidationError("chaos-duration", f"--duration must be 0 to 86400 seconds, not {args.duration}")
    if not 1 <= args.pairs <= 6:
        raise ValidationError("chaos-pairs", f"--pairs must be 1 to 6, not {args.pairs}")
    if not 0 < args.rate <= 20:
        raise ValidationError("chaos-rate", f"--rate must be above 0 and at most 20 parks/s, not {args.rate}")
    if args.window < 0 or args.window > 600:
        raise ValidationError("chaos-window", f"--window must be 0 to 600 seconds, not {args.window}")


def cmd_chaos_run(args: argparse.Namespace) -> int:
    """One chaos scenario (inside a private network namespace when this machine allows it)."""
    _check(args)
    out = Path(args.out or tempfile.mkdtemp(prefix=f"callpark-chaos-{args.scenario}-{args.seed}-")).resolve()
    cfg = runner.RunConfig(
        scenario=args.scenario,
        seed=args.seed,
        duration_s=args.duration,
        out=out,
        pairs=args.pairs,
        rate=args.rate,
        window_s=args.window,
    )
    if not netns.inside():
        try:
            netns.check_available()
        except netns.NetnsUnavailable as exc:
            if runner.needs_netns(args.scenario):
                raise ValidationError("chaos-netns", f"scenario {args.scenario}: {exc}") from None
        else:
            netns.reexec(["-v"] * args.verbose + ["chaos", "run", *cfg.cli_args()])
    return runner.run(cfg)


def cmd_chaos_list(args: argparse.Namespace) -> int:
    print(tables.render(["SCENARIO", "WHAT"], scenarios.catalogue()))
    return 0


def cmd_chaos_smoke(args: argparse.Namespace) -> int:
    """Every smoke scenario with its fixed seed, one process each; a table of all of them."""
    parent = Path(args.out or tempfile.mkdtemp(prefix="callpark-chaos-smoke-")).resolve()
    rows, code = [], 0
    for scenario, seed in scenarios.SMOKE:
        out = parent / f"{scenario}-{seed}"
        argv = [sys.executable, "-m", "callpark.cli", "chaos", "run", "--scenario", scenario, "--seed", str(seed)]
        rc = subprocess.run([*argv, "--out", str(out)], check=False).returncode
        code |= rc
        rows.append(_smoke_row(scenario, seed, out, rc))
    print()
    print(tables.render(["SCENARIO", "SEED", "FAULTS", "OPERATIONS", "CALLS LOST", "WORST RTO", "VERDICT"], rows))
    print(f"runs in {parent}")
    return 1 if code else 0


def _smoke_row(scenario: str, seed: int, out: Path, rc: int) -> tuple[str, ...]:
    """One row of the smoke table, from the run's ``verdict.json``."""
    try:
        v = json.loads((out / "verdict.json").read_text())
        n = v.get("numbers", {})
        ops = f"{n.get('operations_ok', 0):.0f}/{n.get('operations', 0):.0f}"
        rto = f"{n['worst_rto_s']:.2f} s" if n.get("worst_rto_s") else "-"
        return (scenario, str(seed), f"{n.get('faults', 0):.0f}", ops, f"{n.get('calls_lost', 0):.0f}", rto,
                "PASS" if rc == 0 else "FAIL")  # fmt: skip
    except (OSError, ValueError, KeyError):
        return (scenario, str(seed), "-", "-", "-", "-", f"FAIL (exit {rc})")


def add_parsers(sub: Subparsers) -> None:
    """``chaos run|list|smoke``."""
    chaos = group(sub, "chaos", "chaos suite: faults, workload, history and invariant checker")
    p = command(chaos, "run", cmd_chaos_run, "run one scenario on a fresh local cluster and check every invariant")
    p.add_argument("--scenario", required=True, help="a nemesis or a set (see 'callpark chaos list')")
    p.add_argument("--seed", type=int, default=1, help="seeds targets, the workload's choices and packet loss")
    p.add_argument("--duration", type=float, default=0.0, help="seconds of faults; 0: each nemesis once")
    p.add_argument("--out", help="run folder for history, verdict and logs (default: a new temporary dir)")
    p.add_argument("--pairs", type=int, default=3, help="parker/caller/retriever phone triples (1-6)")
    p.add_argument("--rate", type=float, default=1.0, help="new parks per second, all pairs together")
    p.add_argument("--window", type=float, default=0.0, help="seconds each fault lasts (0: the nemesis's own)")
    command(chaos, "list", cmd_chaos_list, "the nemeses and scenario sets")
    p = command(chaos, "smoke", cmd_chaos_smoke, "the CI smoke set: every nemesis once, fixed seeds")
    p.add_argument("--out", help="parent folder for the runs (default: a new temporary dir)")
