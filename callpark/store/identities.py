"""One etcd identity per park node and per controller, each with a role scoped to what it writes.

etcd 3.4 RBAC grants read or read-write on key ranges. The key schema (:mod:`callpark.store.schema`)
lets a node's role be:

* read everything under ``/callpark/`` (it reads configuration, owners, members, music);
* read-write its own member key ``members/<pool>/<node>`` and drain key ``drain/<pool>/<node>``
  (single keys: not another node's, not another pool's);
* read-write ``parked/``, ``lru/`` and ``history/`` as a whole: these are keyed by orbit and park
  id, not by pool, and a node of the backup pool must take over the failed pool's parked calls,
  so they cannot be scoped per pool or node. The transactions still compare the range owner and
  the writer's member lease, so a node writing another pool's orbit is refused by the guard,
  just not by etcd's RBAC.

A controller may write ``owners/``, ``controller/leader``, ``events/`` and ``requests/`` and read
the rest. Neither may write ``config/`` or ``blobs/`` (admin only: the ``callpark`` user), nor
users, roles, membership or snapshots (``root``). With ``--client-cert-auth`` etcd takes a client
certificate's CN as the user name when no password is sent, so a certificate whose CN is
:func:`node_user` is that node's identity without a password file.
"""

from __future__ import annotations

from dataclasses import dataclass

from callpark.store.etcd import EtcdStore
from callpark.store.kv import prefix_end
from callpark.store.schema import APP_PREFIX, Keys

__all__ = ["Grant", "controller_grants", "controller_user", "create_identity", "node_grants", "node_user"]


@dataclass(frozen=True)
class Grant:
    """Read (``write`` False) or read-write on one key (``prefix`` False) or a key prefix."""

    key: str
    write: bool
    prefix: bool = True

    def as_range(self) -> tuple[str, str, bool]:
        return self.key, prefix_end(self.key) if self.prefix else "", self.write


def node_user(pool: str, node: str) -> str:
    """The etcd user (and role, and client certificate CN) of one park node."""
    return f"callpark-node.{pool}.{node}"


def controller_user(name: str) -> str:
    """The etcd user (and role, and client certificate CN) of one controller."""
    return f"callpark-controller.{name}"


def node_grants(pool: str, node: str) -> tuple[Grant, ...]:
    """What one node may touch: read all, write its own keys and the parked-call keys."""
    return (
        Grant(APP_PREFIX, write=False),
        Grant(Keys.member(pool, node), write=True, prefix=False),
        Grant(Keys.drain(pool, node), write=True, prefix=False),
        Grant(Keys.PARKED, write=True),
        Grant(Keys.LRU, write=True),
        Grant(Keys.HISTORY, write=True),
    )


def controller_grants() -> tuple[Grant, ...]:
    """What a controller may touch: read all, write ownership, leadership, events and requests."""
    return (
        Grant(APP_PREFIX, write=False),
        Grant(Keys.OWNERS, write=True),
        Grant(Keys.LEADER, write=True, prefix=False),
        Grant(Keys.EVENTS, write=True),
        Grant(Keys.REQUESTS, write=True),
    )


def create_identity(root: EtcdStore, user: str, password: str, grants: tuple[Grant, ...]) -> None:
    """Create ``user`` with a role of the same name holding ``grants``; ``root`` logs in as root."""
    root.add_scoped_user(user, password, [g.as_range() for g in grants])
