"""Range ownership (``owners/<range>``), members, requests and events: the DR view of etcd.

:func:`read_snapshot` reads everything the controller decides on at one etcd revision.
Owner records are written only by the controller leader, in transactions guarded by
its leadership; nodes compare an owner key's mod revision (the epoch's fencing token)
in every write that depends on owning the range.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from callpark import admin
from callpark.errors import StoreDataError
from callpark.kv import KV
from callpark.node.records import ParkedCall
from callpark.store import Keys, decode, encode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Owner:
    """Which pool serves a range, since which epoch; ``mod_revision`` is the fencing token."""

    range: str
    pool: str
    epoch: int
    mod_revision: int = 0
    reason: str = ""

    def to_bytes(self) -> bytes:
        return encode({"range": self.range, "pool": self.pool, "epoch": self.epoch, "reason": self.reason})

    @classmethod
    def from_entry(cls, key: str, raw: bytes, mod_revision: int) -> Owner:
        data = decode(key, raw)
        try:
            return cls(
                str(data["range"]), str(data["pool"]), int(data["epoch"]), mod_revision, str(data.get("reason", ""))
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreDataError(key, f"{exc.__class__.__name__}: {exc}") from None


@dataclass(frozen=True)
class Member:
    """A live park node (its member key exists only while its lease is alive)."""

    pool: str
    node: str
    ready: bool
    draining: bool
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """An operator's request to the controller (``requests/<id>``)."""

    key: str
    action: str  # failover | failback
    pool: str
    mod_revision: int


@dataclass(frozen=True)
class DrSnapshot:
    """Everything the controller decides on, read at one etcd revision."""

    revision: int
    config: admin.AdminState
    owners: dict[str, Owner]
    members: dict[str, list[Member]]
    parked: list[ParkedCall]
    requests: list[Request]
    leader: dict[str, Any] | None

    def ready_members(self, pool: str) -> list[Member]:
        return [m for m in self.members.get(pool, []) if m.ready and not m.draining]

    def owner_of(self, range_name: str) -> str:
        """The pool serving ``range_name`` (its home pool until the controller says otherwise)."""
        owner = self.owners.get(range_name)
        if owner is not None:
            return owner.pool
        return self.config.ranges[range_name].pool

    def ranges_owned_by(self, pool: str) -> list[str]:
        return sorted(r for r in self.config.ranges if self.owner_of(r) == pool)


def parse_members(entries: dict[str, bytes]) -> dict[str, list[Member]]:
    members: dict[str, list[Member]] = {}
    for key, raw in sorted(entries.items()):
        rest = key[len(Keys.MEMBERS) :]
        if "/" not in rest:
            continue
        pool, node = rest.split("/", 1)
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            log.error("skipping malformed member key %s: %s", key, exc)
            continue
        members.setdefault(pool, []).append(
            Member(pool, node, bool(data.get("ready")), bool(data.get("draining")), data)
        )
    return members


def read_snapshot(kv: KV) -> DrSnapshot:
    """Read config, owners, members, parked calls, requests and the leader at one revision."""
    config_snap = kv.get_prefix(Keys.CONFIG)
    rev = config_snap.revision
    config = admin.parse_state({k: e.value for k, e in config_snap.entries.items()})
    owners: dict[str, Owner] = {}
    for key, entry in kv.get_prefix(Keys.OWNERS, rev).entries.items():
        try:
            owner = Owner.from_entry(key, entry.value, entry.mod_revision)
        except StoreDataError as exc:
            log.error("skipping %s", exc)
            continue
        owners[owner.range] = owner
    members = parse_members({k: e.value for k, e in kv.get_prefix(Keys.MEMBERS, rev).entries.items()})
    parked = []
    for key, entry in kv.get_prefix(Keys.PARKED, rev).entries.items():
        try:
            parked.append(ParkedCall.from_bytes(key, entry.value))
        except StoreDataError as exc:
            log.error("skipping %s", exc)
    requests = []
    for key, entry in kv.get_prefix(Keys.REQUESTS, rev).entries.items():
        try:
            data = decode(key, entry.value)
            requests.append(Request(key, str(data["action"]), str(data["pool"]), entry.mod_revision))
        except (StoreDataError, KeyError) as exc:
            log.error("skipping request %s: %s", key, exc)
    leader_snap = kv.get_prefix(Keys.LEADER, rev).entries.get(Keys.LEADER)
    leader = None
    if leader_snap is not None:
        try:
            leader = dict(json.loads(leader_snap.value)) | {
                "token": leader_snap.create_revision,
                "lease": leader_snap.lease,
            }
        except ValueError:
            leader = {"name": "?", "token": leader_snap.create_revision}
    return DrSnapshot(rev, config, owners, members, parked, requests, leader)


def events(kv: KV, last: int = 20) -> list[dict[str, Any]]:
    """The most recent DR events, oldest first."""
    out = []
    for key, entry in kv.get_prefix(Keys.EVENTS).entries.items():
        try:
            out.append(decode(key, entry.value))
        except StoreDataError:
            continue
    out.sort(key=lambda e: float(e.get("at", 0)))
    return out[-last:]
