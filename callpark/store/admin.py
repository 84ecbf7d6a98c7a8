"""The admin configuration in etcd: read it at one revision, commit a change atomically.

Every change is a pure transition of :class:`~callpark.model.admin.AdminState` committed by
:meth:`AdminStore.change` as one etcd transaction guarded by ``config/serial``: concurrent
admins never check-then-write; the loser re-reads and re-validates, so two overlapping
``orbit new`` give exactly one success.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from callpark.errors import CallparkError, StoreConflict, StoreDataError, StoreIndeterminate
from callpark.model.admin import AdminState, validate_state
from callpark.store.kv import KV, Compare, Delete, Op, Put, Snapshot, unchanged
from callpark.store.records import RecordDecoder, RecordKind, decode, encode, parse_state
from callpark.store.schema import Keys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadResult:
    """The configuration, the mod revision of ``config/serial`` (the guard) and the read revision."""

    state: AdminState
    serial_mod_revision: int
    revision: int


def state_ops(old: AdminState, new: AdminState) -> list[Op]:
    """The puts and deletes that turn ``old`` into ``new`` in etcd."""
    ops: list[Op] = []
    groups: Sequence[tuple[Mapping[str, Any], Mapping[str, Any], Callable[[str], str]]] = (
        (old.pools, new.pools, Keys.pool),
        (old.ranges, new.ranges, Keys.range),
        (old.cps, new.cps, Keys.cps),
        (old.moh, new.moh, Keys.moh_meta),
    )
    for before, after, key_of in groups:
        for name, value in after.items():
            if before.get(name) != value:
                ops.append(Put(key_of(name), encode(_to_json(value))))
        for name in before:
            if name not in after:
                ops.append(Delete(key_of(name)))
    return ops


def _to_json(value: Any) -> dict[str, Any]:
    result: dict[str, Any] = value.to_json()
    return result


class AdminStore:
    """Reads the admin configuration and commits changes to it atomically."""

    def __init__(self, kv: KV, *, max_attempts: int = 50, decoder: RecordDecoder | None = None) -> None:
        """With ``decoder`` (services), malformed records are reported and skipped, not raised."""
        self.kv = kv
        self.max_attempts = max_attempts
        self.decoder = decoder

    def read(self) -> ReadResult:
        """The configuration at one revision, with the guard of the next change."""
        snap = self.kv.get_prefix(Keys.CONFIG)
        serial = snap.entries.get(Keys.CONFIG_SERIAL)
        state = parse_state({k: e.value for k, e in snap.entries.items()}, on_malformed=self._skipper(snap))
        return ReadResult(state, serial.mod_revision if serial else 0, snap.revision)

    def state(self) -> AdminState:
        """The current configuration."""
        return self.read().state

    def _skipper(self, snap: Snapshot) -> Callable[[str, StoreDataError], None] | None:
        decoder = self.decoder
        if decoder is None:
            return None
        return lambda key, exc: decoder.report(RecordKind.CONFIG, key, snap.entries[key].mod_revision, exc.problem)

    def change(
        self,
        transition: Callable[[AdminState], AdminState],
        *,
        extra_compares: Sequence[Compare] = (),
    ) -> AdminState:
        """Apply ``transition`` to the current state and commit it in one guarded txn.

        :raises ValidationError: the change breaks a rule (nothing is written).
        :raises NotFound: the change names something that does not exist.
        :raises StoreConflict: the txn lost ``max_attempts`` races in a row.
        """
        for _ in range(self.max_attempts):
            current = self.read()
            new = transition(current.state)
            validate_state(new)
            ops = state_ops(current.state, new)
            if not ops:
                return new
            write_id = uuid.uuid4().hex
            serial = Put(Keys.CONFIG_SERIAL, encode({"write_id": write_id, "at": time.time()}))
            compares = [unchanged(Keys.CONFIG_SERIAL, current.serial_mod_revision), *extra_compares]
            try:
                result = self.kv.txn(compares, [*ops, serial])
            except StoreIndeterminate:
                if self._serial_write_id() == write_id:
                    return new
                continue
            if result.succeeded:
                log.info("admin change committed at revision %d (%d keys)", result.revision, len(ops))
                return new
            if extra_compares and self._extra_failed(extra_compares):
                raise StoreConflict("a precondition of this change no longer holds (stored data changed)")
        raise StoreConflict(f"admin change lost {self.max_attempts} races in a row; try again")

    def _serial_write_id(self) -> str | None:
        entry = self.kv.get(Keys.CONFIG_SERIAL)
        if entry is None:
            return None
        try:
            return str(decode(entry.key, entry.value).get("write_id"))
        except CallparkError:
            return None

    def _extra_failed(self, compares: Sequence[Compare]) -> bool:
        result = self.kv.txn(compares, [])
        return not result.succeeded
