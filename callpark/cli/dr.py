"""``callpark dr``: disaster recovery status, planned failover, failback and drain.

The work is done in :mod:`callpark.dr.status`, :mod:`callpark.dr.requests` and
:mod:`callpark.dr.drain`; these commands parse, connect and print.
"""

from __future__ import annotations

import argparse

from callpark.cli.common import Subparsers, command, connect, group, print_json
from callpark.dr import drain, requests
from callpark.dr import status as drstatus
from callpark.errors import CallparkError, ValidationError


def cmd_dr_status(args: argparse.Namespace) -> int:
    store = connect(args)
    try:
        view = drstatus.collect(store, last_events=args.events)
    finally:
        store.close()
    if args.json:
        print_json(view)
    else:
        print(drstatus.render(view))
    return 0


def _dr_request(args: argparse.Namespace, action: str) -> int:
    store = connect(args)
    try:
        done = requests.submit(store, action, args.pool, args.timeout)
    finally:
        store.close()
    print(requests.describe(done))
    return 0


def cmd_dr_failover(args: argparse.Namespace) -> int:
    return _dr_request(args, "failover")


def cmd_dr_failback(args: argparse.Namespace) -> int:
    return _dr_request(args, "failback")


def cmd_dr_drain(args: argparse.Namespace) -> int:
    """Move a node's parked calls to its peers live (INVITE/Replaces), so it can be stopped."""
    if "/" not in args.node:
        raise ValidationError("dr-node", f"--node must be POOL/NODE, not {args.node!r}")
    pool, node = args.node.split("/", 1)
    store = connect(args)
    try:
        if args.cancel:
            drain.cancel(store, pool, node)
            print(f"{args.node}: drain cancelled; the node parks again")
            return 0
        done = drain.drain(store, pool, node, args.timeout)
    finally:
        store.close()
    if done.lost:
        raise CallparkError(f"{args.node} drained, but {done.lost} of {done.calls} call(s) could not be moved (lost)")
    moved = f"{done.calls} parked call(s) moved to its peers"
    print(f"{args.node} drained: {moved}; it parks nothing new and can be stopped")
    return 0


def add_parsers(sub: Subparsers) -> None:
    """``dr status|failover|failback|drain``."""
    dr = group(sub, "dr", "disaster recovery: status, planned failover, failback, drain")
    p = command(dr, "status", cmd_dr_status, "pools, members, owners, epochs, parked calls, last events")
    p.add_argument("--json", action="store_true")
    p.add_argument("--events", type=int, default=10)
    for name, fn, help_ in (
        ("failover", cmd_dr_failover, "planned failover: move a pool's ranges to its backup"),
        ("failback", cmd_dr_failback, "move a pool's ranges back home"),
    ):
        p = command(dr, name, fn, help_)
        p.add_argument("--pool", required=True)
        p.add_argument("--timeout", type=float, default=30.0)
    p = command(dr, "drain", cmd_dr_drain, "hand a node's parked calls to its peers so it can be stopped")
    p.add_argument("--node", required=True, help="POOL/NODE")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--cancel", action="store_true", help="end the drain: the node parks again")
