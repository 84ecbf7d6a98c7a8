"""Parked-call state in etcd: orbit allocation, claims and frees, all as guarded txns.

Every write compares the writer's member key lease (a node whose lease expired
cannot write) and, for an existing record, the record's mod revision as last seen
(so two writers never both win). Allocation is "create if absent" on
``parked/<orbit>``, least recently freed orbit first.

Every write of ``parked/<orbit>`` carries a fresh ``write_id``; a write that times out is
read back: applied -> returned as if etcd had answered, else :class:`Unapplied` (with what
etcd holds) or :class:`Unresolved` (the read failed too; the caller keeps the write id).
What the node does in each case: :mod:`callpark.node.calls`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from callpark.errors import StoreError, StoreIndeterminate
from callpark.model.orbits import OrbitRange
from callpark.store.expiry import HISTORY_BUCKET_S, HISTORY_KEEP_S, BucketLeases
from callpark.store.kv import KV, Compare, Delete, Entry, Put, absent, unchanged
from callpark.store.records import (
    DEFAULT,
    CallState,
    Dialog,
    Holder,
    Outcome,
    ParkedCall,
    ParkKind,
    RecordDecoder,
    RecordKind,
    decode,
    history_bytes,
    parse_history,
    parse_stamp,
    stamp_bytes,
)
from callpark.store.schema import Keys

log = logging.getLogger(__name__)


class NoFreeOrbit(Exception):
    """Every orbit of the pool's CallPark ranges is taken (Lync 35002)."""


class OrbitTaken(Exception):
    """A directed park named an orbit that is in use."""


class LostRace(Exception):
    """Another writer changed the record first (e.g. a second retriever)."""


class OwnershipChanged(Exception):
    """The range's owner key moved since this node read it (a failover or failback)."""


class Fenced(Exception):
    """This node's lease is gone: it may not write."""


class Unapplied(StoreIndeterminate):
    """A write timed out and reading it back shows it did not apply; ``current``: what etcd holds."""

    def __init__(self, message: str, current: Held | None) -> None:
        super().__init__(message)
        self.current = current


class Unresolved(StoreIndeterminate):
    """A write timed out and reading it back failed too: etcd may hold ``call`` (its write id tells)."""

    def __init__(self, message: str, call: ParkedCall) -> None:
        super().__init__(message)
        self.call = call


# Guards, in one place: acquiring a call (allocate, take over) compares the range
# owner's epoch (owner key revision), the record (absent or as last read) and the
# writer's lease; every later change to a call compares the record's revision and the
# holder's lease. After a failback, calls parked on the backup pool therefore stay with
# their holder until retrieved, timed out or drained (DESIGN-BRIEF), while a paused or
# partitioned holder that wakes up cannot touch a record someone else has taken.


@dataclass(frozen=True)
class Held:
    """A record this node holds, with the mod revision of its last write or read."""

    call: ParkedCall
    mod_revision: int


def read_parked(kv: KV, decoder: RecordDecoder = DEFAULT) -> list[Held]:
    """Every parked call in the cluster, for readers that hold none (CLI, drills, drains)."""
    out = []
    for entry in kv.get_prefix(Keys.PARKED).entries.values():
        call = decoder.decode(RecordKind.PARKED, entry, ParkedCall.from_bytes)
        if call is not None:
            out.append(Held(call, entry.mod_revision))
    return out


def read_history(kv: KV, park_id: str, decoder: RecordDecoder = DEFAULT) -> dict[str, object] | None:
    """The history record of ``park_id`` as a dict, None when absent or malformed."""
    entry = kv.get(Keys.history(park_id))
    if entry is None or decoder.decode(RecordKind.HISTORY, entry, parse_history) is None:
        return None
    return dict(decode(entry.key, entry.value))


def prune_history(kv: KV, now: float | None = None, decoder: RecordDecoder = DEFAULT, batch: int = 100) -> int:
    """Delete ``history/`` records that carry no lease and ended over HISTORY_KEEP_S ago, and
    malformed ones; returns how many. An operator's one-off (``callpark parked prune-history``):
    records written since history leases exist expire by themselves and are left alone.

    Deletes go ``batch`` keys per txn (etcd's default limit is 128 ops); a batch that times
    out may have applied, and running the command again finishes the job.
    """
    now = time.time() if now is None else now
    dead = []
    for key, entry in kv.get_prefix(Keys.HISTORY).entries.items():
        record = decoder.decode(RecordKind.HISTORY, entry, parse_history)
        if record is None or (entry.lease == 0 and record.ended_at < now - HISTORY_KEEP_S):
            dead.append(key)  # malformed history is reported, then pruned with the old
    for start in range(0, len(dead), batch):
        kv.txn([], [Delete(key) for key in dead[start : start + batch]])
    return len(dead)


class ParkTable:
    """The node's view of ``parked/``, ``lru/`` and ``history/`` in etcd."""

    def __init__(self, kv: KV, *, node: str, pool: str, member_key: str, decoder: RecordDecoder = DEFAULT) -> None:
        self.kv = kv
        self.decoder = decoder  # malformed records are reported and skipped
        self.node = node
        self.pool = pool
        self.member_key = member_key
        self.lease = 0
        # range -> (owner key mod revision, epoch, owning pool) as last read; a range without
        # an owner key yet (no controller has run) is served by its home pool
        self.owners: dict[str, tuple[int, int, str]] = {}
        # history records expire by themselves (bucket leases): nobody scans history/
        self.history_leases = BucketLeases(kv, keep_s=HISTORY_KEEP_S, bucket_s=HISTORY_BUCKET_S)

    def owner_epoch(self, range_name: str) -> int:
        """The epoch of the range's owner as this node last read it (1 before any owner key)."""
        return self.owners.get(range_name, (0, 1, self.pool))[1]

    def _owns(self, range_name: str) -> Compare:
        """Holds only while the owner key is as we read it and it names our pool."""
        mod, _, pool = self.owners.get(range_name, (0, 1, self.pool))
        return Compare(Keys.owner(range_name), "mod", "==", mod if pool == self.pool else -1)

    def take_over(
        self,
        held: Held,
        holder: Holder,
        *,
        holder_member: tuple[str, int] | None = None,
        now: float | None = None,
        timeout_s: float = 90.0,
    ) -> Held:
        """Claim a call whose holder is gone: owner epoch, record revision and lease guarded.

        ``holder_member`` is the old holder's member key and its mod revision when the caller
        decided (0: absent, the holder is gone; else the revision of a live draining node's
        key): the claim also compares it, so a holder that rejoins (or stops draining) between
        the caller's reads and this claim keeps its call (:class:`LostRace`).

        A call that was ringing back when its holder died counts that ringback as done
        (the parker's phone rang once) and is re-armed, so no ringback happens twice.
        """
        now = time.time() if now is None else now
        call = held.call
        if call.state in (CallState.RINGING, CallState.FORWARDING):
            call = replace(call, attempts=call.attempts + 1, deadline=now + timeout_s)
        call = replace(call, holder=holder, state=CallState.PARKED, owner_epoch=self.owner_epoch(call.range))
        compares = [unchanged(Keys.parked(call.orbit), held.mod_revision), self._alive(), self._owns(call.range)]
        if holder_member is not None:
            compares.append(unchanged(*holder_member))
        written = self._put(compares, call)
        if written is None:
            self._check_alive()
            raise LostRace(f"orbit {call.orbit}: another node claimed it, its holder came back or its range moved")
        return written

    def _put(self, compares: list[Compare], call: ParkedCall) -> Held | None:
        """Write ``call`` with a fresh write id if ``compares`` hold; None when they do not.

        A time-out is resolved by reading the record back: our write id there means the write
        applied (returned as usual); otherwise :class:`Unapplied` (with what etcd holds), or
        :class:`Unresolved` when the read fails too.
        """
        call = replace(call, write_id=secrets.token_hex(8))
        try:
            result = self.kv.txn(compares, [Put(Keys.parked(call.orbit), call.to_bytes())])
        except StoreIndeterminate as exc:
            try:
                current = self.get(call.orbit)
            except StoreError as err:
                raise Unresolved(f"orbit {call.orbit}: {exc}; reading it back failed: {err}", call) from err
            if current is not None and current.call.write_id == call.write_id:
                log.info("orbit %s: a write that timed out had applied", call.orbit)
                return current
            raise Unapplied(f"orbit {call.orbit}: {exc}; it did not apply", current) from exc
        return Held(call, result.revision) if result.succeeded else None

    def _alive(self) -> Compare:
        """Holds only while our member key is bound to our current lease."""
        return Compare(self.member_key, "lease", "==", self.lease)

    # -- reads -------------------------------------------------------------------------

    def get(self, orbit: str) -> Held | None:
        """The record on ``orbit``; None when absent or malformed (reported)."""
        entry = self.kv.get(Keys.parked(orbit))
        return None if entry is None else self._held(entry)

    def all_parked(self) -> list[Held]:
        """Every parked call in the cluster; malformed records are reported and skipped."""
        return read_parked(self.kv, self.decoder)

    def _held(self, entry: Entry) -> Held | None:
        call = self.decoder.decode(RecordKind.PARKED, entry, ParkedCall.from_bytes)
        return None if call is None else Held(call, entry.mod_revision)

    # -- allocation ----------------------------------------------------------------------

    def candidates(self, ranges: Sequence[OrbitRange]) -> list[str]:
        """Free orbits of ``ranges``, least recently freed first (never used first)."""
        taken = {k[len(Keys.PARKED) :] for k in self.kv.get_prefix(Keys.PARKED).entries}
        freed: dict[str, float] = {}
        for key, entry in self.kv.get_prefix(Keys.LRU).entries.items():
            stamp = self.decoder.decode(RecordKind.LRU, entry, parse_stamp)
            if stamp is not None:
                freed[key[len(Keys.LRU) :]] = stamp.at
        free = [o for r in ranges for o in r.orbits() if o not in taken]
        return sorted(free, key=lambda o: (freed.get(o, 0.0), o))

    def allocate(
        self,
        ranges: Sequence[OrbitRange],
        *,
        target: str | None,
        holder: Holder,
        dialog: Dialog,
        kind: ParkKind,
        caller_uri: str,
        parker_uri: str | None,
        timeout_s: float,
        now: float | None = None,
    ) -> Held:
        """Create the record on a free orbit (``target`` for a directed park)."""
        now = time.time() if now is None else now
        by_orbit = {o: r for r in ranges for o in ([target] if target and r.contains(target) else [])}
        if target is not None:
            if target not in by_orbit:
                raise OrbitTaken(f"orbit {target} is not in a CallPark range of pool {self.pool}")
            order = [target]
        else:
            order = self.candidates(ranges)
        for orbit in order:
            rng = by_orbit.get(orbit) or next(r for r in ranges if r.contains(orbit))
            call = ParkedCall(
                orbit=orbit,
                park_id=secrets.token_hex(8),
                pool=self.pool,
                range=rng.name,
                kind=kind,
                state=CallState.PARKED,
                holder=holder,
                dialog=dialog,
                caller_uri=caller_uri,
                parker_uri=parker_uri,
                parked_at=now,
                deadline=now + timeout_s,
                attempts=0,
            )
            call = replace(call, owner_epoch=self.owner_epoch(rng.name))
            written = self._put([absent(Keys.parked(orbit)), self._alive(), self._owns(rng.name)], call)
            if written is not None:
                return written
            self._check_alive()
            if not self.kv.txn([self._owns(rng.name)], []).succeeded:
                raise OwnershipChanged(f"range {rng.name} changed owner; re-read the owners")
        if target is not None:
            raise OrbitTaken(f"orbit {target} is in use")
        raise NoFreeOrbit(f"no free orbit in the CallPark ranges of pool {self.pool}")

    # -- changes to a held record ---------------------------------------------------------

    def update(self, held: Held, call: ParkedCall) -> Held:
        """Replace the record if nobody changed it since ``held`` was read."""
        written = self._put([unchanged(Keys.parked(held.call.orbit), held.mod_revision), self._alive()], call)
        if written is None:
            self._check_alive()
            raise LostRace(f"orbit {held.call.orbit} changed under us")
        return written

    def claim(self, held: Held, state: CallState) -> Held:
        """Move a parked call to ``state`` (retrieving, ringing...) if still as seen."""
        if held.call.state != CallState.PARKED:
            raise LostRace(f"orbit {held.call.orbit} is {held.call.state.value}")
        return self.update(held, held.call.with_state(state))

    def free(self, held: Held, outcome: Outcome, detail: str = "", now: float | None = None) -> None:
        """Delete the record, stamp the orbit's LRU time and record the outcome, in one txn.

        The history record is written under the current history bucket lease, so it expires
        by itself after about :data:`HISTORY_KEEP_S` (:mod:`callpark.store.expiry`).
        """
        now = time.time() if now is None else now
        call = held.call
        lease = self.history_leases.lease()
        record = history_bytes(call, outcome, detail, now, f"{self.pool}/{self.node}")
        try:
            result = self.kv.txn(
                [unchanged(Keys.parked(call.orbit), held.mod_revision), self._alive()],
                [
                    Delete(Keys.parked(call.orbit)),
                    Put(Keys.lru(call.orbit), stamp_bytes(now)),
                    Put(Keys.history(call.park_id), record, lease=lease),
                ],
            )
        except StoreError:
            self.history_leases.forget()  # e.g. the bucket lease ran out while we were paused
            raise
        if not result.succeeded:
            self._check_alive()
            raise LostRace(f"orbit {call.orbit} changed before it could be freed")

    def refresh(self, held: Held) -> Held | None:
        """Re-read a record we think we hold; None when it is gone or another's."""
        current = self.get(held.call.orbit)
        if current is None or current.call.park_id != held.call.park_id:
            return None
        return current

    def history(self, park_id: str) -> dict[str, object] | None:
        """The history record of ``park_id`` as a dict, None when absent or malformed."""
        return read_history(self.kv, park_id, self.decoder)

    def _check_alive(self) -> None:
        entry = self.kv.get(self.member_key)
        if entry is None or entry.lease != self.lease:
            raise Fenced(f"node {self.node}: member key lost its lease; refusing to write")
