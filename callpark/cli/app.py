"""The ``callpark`` command line: the top-level parser and :func:`main`.

Each command group lives in its own module (:mod:`callpark.cli.admin`, ``prompts``, ``parked``,
``lab``, ``service``, ``dr``, ``chaos``) with an ``add_parsers`` function; the shared
parser class, etcd access and exit codes are in :mod:`callpark.cli.common`.

Exit status: 0 success, 1 a rule was broken or something named does not exist,
2 bad usage, 3 etcd unreachable or its data malformed. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from callpark import __version__
from callpark.cli import admin, chaos, dr, identity, lab, parked, prompts, service
from callpark.cli.common import CliParser, add_etcd_options, resolve_etcd, run_command


def build_parser() -> argparse.ArgumentParser:
    """The whole ``callpark`` parser (commands in the order ``--help`` lists them)."""
    parser = CliParser(prog="callpark", description="Clustered SIP Call Park service (Lync 2013 semantics).")
    parser.add_argument("--version", action="version", version=f"callpark {__version__}")
    add_etcd_options(parser)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CliParser)
    admin.add_parsers(sub)
    prompts.add_parsers(sub)
    parked.add_parsers(sub)
    lab.add_phone_parser(sub)
    service.add_parsers(sub)
    dr.add_parsers(sub)
    identity.add_parsers(sub)
    lab.add_parsers(sub)
    chaos.add_parsers(sub)
    lab.add_demo_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``callpark`` console script."""
    args = build_parser().parse_args(argv)
    resolve_etcd(args)
    signal.signal(signal.SIGTERM, _terminate)  # commands that run services install their own
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_command(args.func, args)


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM: unwind like Ctrl-C, so every ``finally`` stops the processes it started."""
    raise KeyboardInterrupt


def run() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":  # python -m callpark.cli.app (tests use it; python -m callpark.cli is the same)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run()
