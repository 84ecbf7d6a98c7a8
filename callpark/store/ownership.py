"""Range ownership (``owners/<range>``), members, requests and events: the DR view of etcd.

:func:`read_snapshot` reads everything the controller decides on at one etcd revision (the
records and their parsers live in :mod:`callpark.store.records`).
Owner records are written only by the controller leader, in transactions guarded by
its leadership; nodes compare an owner key's mod revision (the epoch's fencing token)
in every write that depends on owning the range.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

from callpark.model.admin import AdminState
from callpark.store.kv import KV
from callpark.store.records import (
    DEFAULT,
    Member,
    Owner,
    ParkedCall,
    RecordDecoder,
    RecordKind,
    Request,
    parse_event,
    parse_leader,
    parse_members,
    parse_request,
    parse_state,
)
from callpark.store.schema import Keys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrSnapshot:
    """Everything the controller decides on, read at one etcd revision."""

    revision: int
    config: AdminState
    owners: dict[str, Owner]
    members: dict[str, list[Member]]
    parked: list[ParkedCall]
    requests: list[Request]
    leader: dict[str, Any] | None

    def ready_members(self, pool: str) -> list[Member]:
        """Members of ``pool`` that are ready and not draining."""
        return [m for m in self.members.get(pool, []) if m.ready and not m.draining]

    def owner_of(self, range_name: str) -> str:
        """The pool serving ``range_name`` (its home pool until the controller says otherwise)."""
        owner = self.owners.get(range_name)
        if owner is not None:
            return owner.pool
        rng = self.config.ranges.get(range_name)
        return "" if rng is None else rng.pool  # a parked record may name a range that is gone

    def ranges_owned_by(self, pool: str) -> list[str]:
        """The ranges ``pool`` serves now, by name."""
        return sorted(r for r in self.config.ranges if self.owner_of(r) == pool)


def read_routing(kv: KV, decoder: RecordDecoder = DEFAULT) -> tuple[int, AdminState, dict[str, Owner]]:
    """Config and range owners at one revision (what an edge routes by); malformed records skipped."""
    config_snap = kv.get_prefix(Keys.CONFIG)
    rev = config_snap.revision
    config = parse_state(
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
    return rev, config, owners


def read_snapshot(kv: KV, decoder: RecordDecoder = DEFAULT) -> DrSnapshot:
    """Read config, owners, members, parked calls, requests and the leader at one revision.

    Malformed records are reported through ``decoder`` and skipped (never raised).
    """
    rev, config, owners = read_routing(kv, decoder)
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
