"""What every command group shares: the parser class, registering commands, the etcd
options and connecting, JSON output and the mapping of errors to exit codes.

Exit status: 0 success, 1 a rule was broken or something named does not exist,
2 bad usage, 3 etcd unreachable or its data malformed. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeAlias

from callpark.errors import CallparkError, NotFound, StoreError, ValidationError
from callpark.store import access as etcdaccess
from callpark.store.admin import AdminStore
from callpark.store.etcd import EtcdStore

EXIT_RULE = 1
EXIT_USAGE = 2
EXIT_STORE = 3

Command: TypeAlias = Callable[[argparse.Namespace], int]


class CliParser(argparse.ArgumentParser):
    """An argument parser whose usage errors exit with :data:`EXIT_USAGE` and one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"callpark: error: {message} (see '{self.prog} --help')\n")


Subparsers: TypeAlias = "argparse._SubParsersAction[CliParser]"


def group(sub: Subparsers, name: str, help_: str) -> Subparsers:
    """A command group (``callpark NAME ACTION``); returns where its actions go."""
    p = sub.add_parser(name, help=help_)
    return p.add_subparsers(dest="action", required=True, parser_class=CliParser)


def command(sub: Subparsers, name: str, fn: Command, help_: str) -> argparse.ArgumentParser:
    """One command (or one action of a group) that runs ``fn``."""
    p = sub.add_parser(name, help=help_)
    p.set_defaults(func=fn)
    return p


def add_etcd_options(parser: argparse.ArgumentParser) -> None:
    """The global options that say how to reach etcd (``--etcd`` and the credential files)."""
    parser.add_argument(
        "--etcd",
        metavar="URLS",
        default=None,
        help="comma-separated etcd client URLs (default: $CALLPARK_ETCD or http://127.0.0.1:2379)",
    )
    etcdaccess.add_cli_options(parser)  # --etcd-ca/-cert/-key/-user/-password-file and $CALLPARK_ETCD_*


def resolve_etcd(args: argparse.Namespace) -> None:
    """Replace ``args.etcd`` by the resolved :class:`~callpark.store.access.EtcdAccess`
    (options over the environment); every command connects with it."""
    args.etcd = etcdaccess.from_args(args)


def connect(args: argparse.Namespace) -> EtcdStore:
    """A store on the etcd the global options name (``main`` resolved them into ``args.etcd``)."""
    return EtcdStore.connect(args.etcd)


def admin_store(args: argparse.Namespace) -> AdminStore:
    """The admin model on the etcd the global options name."""
    return AdminStore(connect(args))


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def run_command(fn: Command, args: argparse.Namespace) -> int:
    """Run one command; an error becomes one line on stderr and its exit status."""
    try:
        return int(fn(args))
    except ValidationError as exc:
        return _fail(str(exc), EXIT_RULE)
    except NotFound as exc:
        return _fail(f"[not-found] {exc}", EXIT_RULE)
    except StoreError as exc:
        return _fail(f"[etcd] {exc}", EXIT_STORE)
    except CallparkError as exc:
        return _fail(str(exc), EXIT_RULE)
    except KeyboardInterrupt:
        return 130


def _fail(message: str, code: int) -> int:
    print(f"callpark: error: {message}", file=sys.stderr)
    return code
