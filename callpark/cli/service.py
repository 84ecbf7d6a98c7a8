"""``callpark node`` and ``callpark controller``: the long-running services.

Their options, configuration and run loop live in the packages they start
(:mod:`callpark.node.main`, :mod:`callpark.dr.main`); this module only connects them
to the command line.
"""

from __future__ import annotations

import argparse

from callpark.cli.common import Subparsers, command
from callpark.dr import main as controller_main
from callpark.node import main as node_main


def cmd_node(args: argparse.Namespace) -> int:
    """Run a park node (supervisor + pjsua2 workers) in the foreground until SIGTERM."""
    return node_main.run(node_main.config_from_args(args), args.etcd)


def cmd_controller(args: argparse.Namespace) -> int:
    """Run a failover controller until SIGTERM (several may run; one leads)."""
    return controller_main.run(controller_main.service_from_args(args), args.etcd)


def add_parsers(sub: Subparsers) -> None:
    """``node`` and ``controller``."""
    p = command(sub, "node", cmd_node, "run a park node (supervisor and pjsua2 workers) until SIGTERM")
    node_main.add_arguments(p)
    p = command(sub, "controller", cmd_controller, "run a failover controller (leader-elected) until SIGTERM")
    controller_main.add_arguments(p)
