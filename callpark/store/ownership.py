"""Range ownership (``owners/<range>``), members, requests and events: the DR view of etcd.

:func:`read_snapshot` reads everything the controller decides on at one etcd revision.
Owner records are written only by the controller leader, in transactions guarded by
its leadership; nodes compare an owner key's mod revision (the epoch's fencing token)
in every write that depends on owning the range.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from callpark.errors import StoreDataError
from callpark.model import admin
from callpark.model.pools import validate_name
from callpark.store.etcd import Keys, decode, encode
from callpark.store.kv import KV, Entry
from callpark.store.parked import ParkedCall
from callpark.store.records import DEFAULT, RecordDecoder, RecordKind, flag, number, strict, text, whole

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
        """Parse ``owners/<range>``; anything malformed raises :class:`StoreDataError`."""
        data = decode(key, raw)
        owner = strict(
            key,
            lambda: cls(
                text(data, "range"),
                validate_name("pool", text(data, "pool")),
                whole(data, "epoch", minimum=1),
                mod_revision,
                str(data.get("reason", ""))[:500],
            ),
        )
        if key.startswith(Keys.OWNERS) and key[len(Keys.OWNERS) :] != owner.range:
            raise StoreDataError(key, "record names another range than its key")
        return owner


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
        rng = self.config.ranges.get(range_name)
        return "" if rng is None else rng.pool  # a parked record may name a range that is gone

    def ranges_owned_by(self, pool: str) -> list[str]:
        return sorted(r for r in self.config.ranges if self.owner_of(r) == pool)


def parse_member(key: str, raw: bytes) -> Member:
    """Parse ``members/<pool>/<node>``: ready and draining flags, worker addresses."""
    rest = key[len(Keys.MEMBERS) :] if key.startswith(Keys.MEMBERS) else key
    pool, slash, node = rest.partition("/")
    if not slash or not pool or not node:
        raise StoreDataError(key, "member key is not members/<pool>/<node>")
    data = decode(key, raw)

    def build() -> Member:
        workers = data.get("workers", [])
        if not isinstance(workers, list) or not all(isinstance(w, dict) for w in workers):
            raise ValueError("workers must be a list of objects")
        for worker in workers:
            text(worker, "sip")
            whole(worker, "free", minimum=-(2**31))
        return Member(pool, node, flag(data, "ready"), flag(data, "draining"), data)

    return strict(key, build)


def member_placeholder(entry: Entry) -> Member | None:
    """A member whose record is malformed: its key exists, so its lease (liveness) is real,
    but nothing it says is trusted: not ready, not draining, no workers."""
    pool, slash, node = entry.key[len(Keys.MEMBERS) :].partition("/")
    return Member(pool, node, False, False, {}) if slash and pool and node else None


def parse_members(entries: dict[str, Entry], decoder: RecordDecoder = DEFAULT) -> dict[str, list[Member]]:
    """Members by pool; a malformed record is reported and kept as a not-ready placeholder."""
    members: dict[str, list[Member]] = {}
    for _key, entry in sorted(entries.items()):
        member = decoder.decode(RecordKind.MEMBER, entry, parse_member) or member_placeholder(entry)
        if member is not None:
            members.setdefault(member.pool, []).append(member)
    return members


def parse_request(key: str, raw: bytes, mod_revision: int = 0) -> Request:
    data = decode(key, raw)
    return strict(key, lambda: Request(key, text(data, "action"), text(data, "pool"), mod_revision))


def parse_leader(key: str, raw: bytes) -> dict[str, Any]:
    data = decode(key, raw, legacy_unversioned=True)

    def build() -> dict[str, Any]:
        info: dict[str, Any] = {"name": text(data, "name")[:128], "pid": whole(data, "pid", default=0)}
        if "since" in data:
            info["since"] = number(data, "since")
        return info

    return strict(key, build)


def parse_event(key: str, raw: bytes) -> dict[str, Any]:
    data = decode(key, raw)
    strict(key, lambda: number(data, "at"))
    return data


def read_snapshot(kv: KV, decoder: RecordDecoder = DEFAULT) -> DrSnapshot:
    """Read config, owners, members, parked calls, requests and the leader at one revision.

    Malformed records are reported through ``decoder`` and skipped (never raised).
    """
    config_snap = kv.get_prefix(Keys.CONFIG)
    rev = config_snap.revision
    config = admin.parse_state(
        {k: e.value for k, e in config_snap.entries.items()},
        on_malformed=lambda key, exc: decoder.report(
            RecordKind.CONFIG, key, config_snap.entries[key].mod_revision, exc.problem
        ),
    )
    owners: dict[str, Owner] = {}
    for entry in kv.get_prefix(Keys.OWNERS, rev).entries.values():
        owner = decoder.decode(
            RecordKind.OWNER, entry, functools.partial(Owner.from_entry, mod_revision=entry.mod_revision)
        )
        if owner is not None:
            owners[owner.range] = owner
    members = parse_members(kv.get_prefix(Keys.MEMBERS, rev).entries, decoder)
    parked = [
        call
        for entry in kv.get_prefix(Keys.PARKED, rev).entries.values()
        if (call := decoder.decode(RecordKind.PARKED, entry, ParkedCall.from_bytes)) is not None
    ]
    requests = [
        req
        for entry in kv.get_prefix(Keys.REQUESTS, rev).entries.values()
        if (
            req := decoder.decode(
                RecordKind.REQUEST, entry, functools.partial(parse_request, mod_revision=entry.mod_revision)
            )
        )
        is not None
    ]
    leader_entry = kv.get_prefix(Keys.LEADER, rev).entries.get(Keys.LEADER)
    leader = None
    if leader_entry is not None:
        info = decoder.decode(RecordKind.LEADER, leader_entry, parse_leader) or {"name": "?"}
        leader = info | {"token": leader_entry.create_revision, "lease": leader_entry.lease}
    return DrSnapshot(rev, config, owners, members, parked, requests, leader)


def events(kv: KV, last: int = 20, decoder: RecordDecoder = DEFAULT) -> list[dict[str, Any]]:
    """The most recent DR events, oldest first (malformed ones reported and skipped)."""
    out = [
        event
        for entry in kv.get_prefix(Keys.EVENTS).entries.values()
        if (event := decoder.decode(RecordKind.EVENT, entry, parse_event)) is not None
    ]
    out.sort(key=lambda e: float(e["at"]))
    return out[-last:]
