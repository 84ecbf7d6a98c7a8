"""``callpark identity``: one etcd user per park node or controller, with a role scoped to the
keys it writes (:mod:`callpark.store.identities`). Run with ``root``'s credentials
(``--etcd-user root --etcd-password-file ...``); the new user's password comes from a file."""

from __future__ import annotations

import argparse

from callpark.cli.common import Subparsers, command, connect, group
from callpark.errors import CallparkError
from callpark.model.pools import validate_name
from callpark.store.access import EtcdAccess
from callpark.store.identities import controller_grants, controller_user, create_identity, node_grants, node_user


def _password(path: str) -> str:
    """The new user's password: a file readable by its owner only (as for every etcd password)."""
    try:
        secret = EtcdAccess(password_file=path).password()
    except CallparkError as exc:
        raise CallparkError(str(exc).replace("--etcd-password-file", "--password-file")) from None
    assert secret is not None
    return secret


def cmd_node(args: argparse.Namespace) -> int:
    validate_name("pool", args.pool)
    validate_name("node", args.node)
    user = node_user(args.pool, args.node)
    store = connect(args)
    try:
        create_identity(store, user, _password(args.password_file), node_grants(args.pool, args.node))
    finally:
        store.close()
    print(f"created etcd user {user} (its own member and drain keys, parked calls; read everything)")
    return 0


def cmd_controller(args: argparse.Namespace) -> int:
    validate_name("controller", args.name)
    user = controller_user(args.name)
    store = connect(args)
    try:
        create_identity(store, user, _password(args.password_file), controller_grants())
    finally:
        store.close()
    print(f"created etcd user {user} (range owners, leadership, DR events and requests; read everything)")
    return 0


def add_parsers(sub: Subparsers) -> None:
    """``identity node`` and ``identity controller``."""
    identity = group(sub, "identity", "per-node and per-controller etcd users (run as etcd root)")
    p = command(identity, "node", cmd_node, "create the etcd user of one park node")
    p.add_argument("pool")
    p.add_argument("node")
    p.add_argument("--password-file", required=True, help="file (mode 0600) holding the new user's password")
    p = command(identity, "controller", cmd_controller, "create the etcd user of one controller")
    p.add_argument("name")
    p.add_argument("--password-file", required=True, help="file (mode 0600) holding the new user's password")
