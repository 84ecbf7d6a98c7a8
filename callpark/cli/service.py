"""``callpark node``, ``callpark controller`` and ``callpark edge-sync``: the long-running services.

Their options, configuration and run loop live in the packages they start
(:mod:`callpark.node.main`, :mod:`callpark.dr.main`); this module only connects them
to the command line.
"""

from __future__ import annotations

import argparse
import signal

import prometheus_client

from callpark.cli.common import Subparsers, command, connect
from callpark.dr import main as controller_main
from callpark.edge import sync
from callpark.edge.metrics import edge_registry
from callpark.node import main as node_main


def cmd_node(args: argparse.Namespace) -> int:
    """Run a park node (supervisor + pjsua2 workers) in the foreground until SIGTERM."""
    return node_main.run(node_main.config_from_args(args), args.etcd)


def cmd_controller(args: argparse.Namespace) -> int:
    """Run a failover controller until SIGTERM (several may run; one leads)."""
    return controller_main.run(controller_main.service_from_args(args), args.etcd)


def cmd_edge_sync(args: argparse.Namespace) -> int:
    """Keep one edge's orbit routing table in step with etcd until SIGTERM."""
    sets = sync.parse_sets(args.set)
    syncer = sync.RouteSync(connect(args), args.rpc, sets, interval_s=args.interval)
    if args.metrics_port:
        registry = edge_registry(args.rpc, lambda: (len(syncer.table or ()), syncer.synced_at))
        prometheus_client.start_http_server(args.metrics_port, addr=args.metrics_host, registry=registry)
    signal.signal(signal.SIGTERM, lambda *_: syncer.stop())
    signal.signal(signal.SIGINT, lambda *_: syncer.stop())
    syncer.run()
    return 0


def add_parsers(sub: Subparsers) -> None:
    """``node``, ``controller`` and ``edge-sync``."""
    p = command(sub, "node", cmd_node, "run a park node (supervisor and pjsua2 workers) until SIGTERM")
    node_main.add_arguments(p)
    p = command(sub, "controller", cmd_controller, "run a failover controller (leader-elected) until SIGTERM")
    controller_main.add_arguments(p)
    p = command(sub, "edge-sync", cmd_edge_sync, "keep an edge's orbit routing table in step with etcd until SIGTERM")
    p.add_argument("--rpc", required=True, help="the edge's jsonrpcs socket: a UNIX path or udp:IP:PORT")
    p.add_argument("--set", action="append", default=[], help="POOL=SET: the edge's dispatcher set of a pool")
    p.add_argument("--interval", type=float, default=0.25, help="seconds between reads of etcd (default 0.25)")
    p.add_argument("--metrics-port", type=int, default=0, help="serve the edge's Prometheus metrics here (0: off)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port (default 127.0.0.1)")
