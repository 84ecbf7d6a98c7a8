"""``callpark parked list|prune-history``: parked calls in the cluster; old history records."""

from __future__ import annotations

import argparse
import time
from typing import Any

from callpark import tables
from callpark.cli.common import Subparsers, command, connect, group, print_json
from callpark.store.parking import prune_history, read_parked


def cmd_parked_list(args: argparse.Namespace) -> int:
    """Every parked call in the cluster, from etcd (any node's view is the same)."""
    store = connect(args)
    try:
        calls = sorted((h.call for h in read_parked(store)), key=lambda c: c.orbit)
    finally:
        store.close()
    now = time.time()
    rows: list[dict[str, Any]] = [c.summary(now) for c in calls]
    if args.json:
        print_json(rows)
        return 0
    print(
        tables.render(
            ["ORBIT", "CALLER", "PARKER", "PARKED FOR", "NEXT RINGBACK", "RINGBACKS", "STATE", "HOLDER"],
            [
                (
                    r["orbit"],
                    r["caller"],
                    r["parker"] or "-",
                    f"{r['parked_for_s']:.0f}s",
                    f"in {max(0.0, r['next_ringback_in_s']):.0f}s",
                    r["ringbacks"],
                    r["state"],
                    r["holder"],
                )
                for r in rows
            ],
            empty="(no parked calls)",
        )
    )
    return 0


def cmd_parked_prune_history(args: argparse.Namespace) -> int:
    """Delete lease-less history records older than an hour (written before history expired by itself)."""
    store = connect(args)
    try:
        removed = prune_history(store)
    finally:
        store.close()
    print(f"removed {removed} history record(s)")
    return 0


def add_parsers(sub: Subparsers) -> None:
    """``parked list``, ``parked prune-history``."""
    parked = group(sub, "parked", "parked calls")
    p = command(parked, "list", cmd_parked_list, "orbit, caller, parker, parked for, next ringback")
    p.add_argument("--json", action="store_true")
    command(parked, "prune-history", cmd_parked_prune_history, "delete lease-less history older than an hour")
