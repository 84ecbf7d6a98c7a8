"""Admin configuration: pools, the orbit table, Call Park settings and music metadata.

Every command is a pure transition of an :class:`AdminState` (validated as a whole
after the change) committed by :meth:`AdminStore.change` as one etcd transaction
guarded by ``config/serial``: concurrent admins never check-then-write; the loser
re-reads and re-validates, so two overlapping ``orbit new`` give exactly one success.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from callpark.errors import CallparkError, NotFound, StoreConflict, StoreDataError, StoreIndeterminate, ValidationError
from callpark.model.music import MohMeta
from callpark.model.orbits import OrbitRange, RangeType, find_overlap, validate_range_shape, validate_table
from callpark.model.pools import FailbackPolicy, Pool, validate_name, validate_pools
from callpark.model.settings import DEFAULTS, GLOBAL_SCOPE, CpsSettings, effective_settings, parse_scope
from callpark.store.etcd import Keys, decode, encode
from callpark.store.kv import KV, Compare, Delete, Op, Put, Snapshot, unchanged
from callpark.store.records import RecordDecoder, RecordKind

log = logging.getLogger(__name__)

UNSET: Any = object()  # "not given" for optional changes where None means "clear"


@dataclass(frozen=True)
class AdminState:
    """The whole admin configuration at one etcd revision."""

    pools: Mapping[str, Pool] = field(default_factory=dict)
    ranges: Mapping[str, OrbitRange] = field(default_factory=dict)
    cps: Mapping[str, CpsSettings] = field(default_factory=dict)
    moh: Mapping[str, MohMeta] = field(default_factory=dict)

    def settings(self, scope: str) -> CpsSettings:
        """Stored settings of a scope; global always exists (defaults when never set)."""
        if scope == GLOBAL_SCOPE:
            return self.cps.get(GLOBAL_SCOPE, DEFAULTS)
        if scope not in self.cps:
            raise NotFound(f"Call Park settings {scope!r} do not exist")
        return self.cps[scope]

    def effective(self, pool: str) -> tuple[str, CpsSettings]:
        """The settings in force for ``pool`` (its site's, else global) and their scope."""
        if pool not in self.pools:
            raise NotFound(f"pool {pool!r} does not exist")
        return effective_settings(self.cps, self.pools[pool].site)

    def ranges_of(self, pool: str, type_: RangeType | None = None) -> list[OrbitRange]:
        return sorted(
            (r for r in self.ranges.values() if r.pool == pool and (type_ is None or r.type == type_)),
            key=lambda r: r.name,
        )


def validate_state(state: AdminState) -> None:
    """Every rule over the whole configuration (raises :class:`ValidationError`)."""
    validate_pools(state.pools)
    validate_table(state.ranges.values(), state.pools.keys())
    for scope, settings in state.cps.items():
        if parse_scope(scope) != scope:
            raise ValidationError("cps-scope", f"settings scope {scope!r} is not normalised")
        settings.validate()
    for pool in state.moh:
        if pool not in state.pools:
            raise ValidationError("pool-missing", f"music on hold for unknown pool {pool!r}")


# -- pools ------------------------------------------------------------------------------


def new_pool(
    state: AdminState,
    name: str,
    site: str,
    backup: str | None = None,
    failback: FailbackPolicy = FailbackPolicy.MANUAL,
    failback_hold_down_s: int | None = None,
) -> AdminState:
    validate_name("pool", name)
    validate_name("site", site)
    if name in state.pools:
        raise ValidationError("pool-exists", f"pool {name!r} already exists")
    pool = Pool(name, site, None, failback)
    if failback_hold_down_s is not None:
        pool = replace(pool, failback_hold_down_s=failback_hold_down_s)
    pools = {**state.pools, name: pool}
    if backup is not None:
        pools = _pair(pools, name, backup)
    return replace(state, pools=pools)


def set_pool(
    state: AdminState,
    name: str,
    *,
    site: str | None = None,
    backup: str | None = UNSET,
    failback: FailbackPolicy | None = None,
    failback_hold_down_s: int | None = None,
) -> AdminState:
    pool = _pool(state, name)
    if site is not None:
        pool = replace(pool, site=validate_name("site", site))
    if failback is not None:
        pool = replace(pool, failback=failback)
    if failback_hold_down_s is not None:
        pool = replace(pool, failback_hold_down_s=failback_hold_down_s)
    pools = {**state.pools, name: pool}
    if backup is not UNSET and backup != pool.backup:
        # Re-pairing is never implicit: a paired pool must be unpaired first (1:1 pairing).
        pools = _unpair(pools, name) if backup is None else _pair(pools, name, backup)
    return replace(state, pools=pools)


def remove_pool(state: AdminState, name: str) -> AdminState:
    _pool(state, name)
    owned = [r.name for r in state.ranges.values() if r.pool == name]
    if owned:
        raise ValidationError(
            "pool-owns-ranges", f"pool {name!r} still owns range(s) {', '.join(sorted(owned))}; move or remove them"
        )
    pools = dict(_unpair(dict(state.pools), name))
    del pools[name]
    moh = {p: m for p, m in state.moh.items() if p != name}
    return replace(state, pools=pools, moh=moh)


def _pool(state: AdminState, name: str) -> Pool:
    if name not in state.pools:
        raise NotFound(f"pool {name!r} does not exist")
    return state.pools[name]


def _pair(pools: dict[str, Pool], name: str, backup: str) -> dict[str, Pool]:
    validate_name("pool", backup)
    if backup == name:
        raise ValidationError("pool-pairing", f"pool {name!r} cannot be its own backup")
    if backup not in pools:
        raise ValidationError("pool-missing", f"backup pool {backup!r} does not exist")
    for one, other in ((name, backup), (backup, name)):
        current = pools[one].backup
        if current is not None and current != other:
            raise ValidationError(
                "pool-pairing",
                f"pool {one!r} is already paired with {current!r}; pairing is 1:1 (unpair it first)",
            )
    return {**pools, name: replace(pools[name], backup=backup), backup: replace(pools[backup], backup=name)}


def _unpair(pools: dict[str, Pool], name: str) -> dict[str, Pool]:
    partner = pools[name].backup
    out = {**pools, name: replace(pools[name], backup=None)}
    if partner is not None and partner in out and out[partner].backup == name:
        out[partner] = replace(out[partner], backup=None)
    return out


# -- orbit ranges -------------------------------------------------------------------------


def new_range(state: AdminState, rng: OrbitRange) -> AdminState:
    if rng.name in state.ranges:
        raise ValidationError("range-exists", f"range {rng.name!r} already exists (names are unique)")
    return _put_range(state, rng)


def set_range(
    state: AdminState,
    name: str,
    *,
    start: str | None = None,
    end: str | None = None,
    pool: str | None = None,
    type_: RangeType | None = None,
) -> AdminState:
    if name not in state.ranges:
        raise NotFound(f"range {name!r} does not exist")
    old = state.ranges[name]
    rng = OrbitRange(
        name,
        old.start if start is None else start,
        old.end if end is None else end,
        old.pool if pool is None else pool,
        old.type if type_ is None else type_,
    )
    return _put_range(state, rng)


def remove_range(state: AdminState, name: str) -> AdminState:
    if name not in state.ranges:
        raise NotFound(f"range {name!r} does not exist")
    return replace(state, ranges={n: r for n, r in state.ranges.items() if n != name})


def _put_range(state: AdminState, rng: OrbitRange) -> AdminState:
    validate_range_shape(rng)
    if rng.pool not in state.pools:
        raise ValidationError("pool-missing", f"range {rng.name!r}: pool {rng.pool!r} does not exist")
    clash = find_overlap(rng, state.ranges.values())
    if clash is not None:
        raise ValidationError(
            "range-overlap",
            f"range {rng.describe()} overlaps {clash.type.value} range {clash.describe()}",
        )
    return replace(state, ranges={**state.ranges, rng.name: rng})


# -- Call Park settings ---------------------------------------------------------------------


def cps_new(state: AdminState, scope: str, changes: Mapping[str, Any]) -> AdminState:
    scope = parse_scope(scope)
    if scope == GLOBAL_SCOPE:
        raise ValidationError("cps-global-exists", "global settings always exist; change them with 'cps set'")
    if scope in state.cps:
        raise ValidationError("cps-exists", f"Call Park settings {scope!r} already exist")
    return replace(state, cps={**state.cps, scope: DEFAULTS.with_changes(changes)})


def cps_set(state: AdminState, scope: str, changes: Mapping[str, Any]) -> AdminState:
    scope = parse_scope(scope)
    current = state.settings(scope)
    return replace(state, cps={**state.cps, scope: current.with_changes(changes)})


def cps_remove(state: AdminState, scope: str) -> AdminState:
    """Remove a site's settings; for global, reset to the defaults."""
    scope = parse_scope(scope)
    if scope != GLOBAL_SCOPE and scope not in state.cps:
        raise NotFound(f"Call Park settings {scope!r} do not exist")
    return replace(state, cps={s: v for s, v in state.cps.items() if s != scope})


# -- music on hold metadata ------------------------------------------------------------------


def moh_set(state: AdminState, meta: MohMeta) -> AdminState:
    _pool(state, meta.pool)
    return replace(state, moh={**state.moh, meta.pool: meta})


def moh_reset(state: AdminState, pool: str) -> AdminState:
    _pool(state, pool)
    return replace(state, moh={p: m for p, m in state.moh.items() if p != pool})


# -- the store side ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadResult:
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


def parse_state(
    entries: Mapping[str, bytes], *, on_malformed: Callable[[str, StoreDataError], None] | None = None
) -> AdminState:
    """Decode ``config/`` keys; a malformed record raises :class:`StoreDataError` naming its key.

    With ``on_malformed`` (nodes, controllers) a malformed record is handed to it and
    left out instead, so one bad record never stops a service.
    """
    pools: dict[str, Pool] = {}
    ranges: dict[str, OrbitRange] = {}
    cps: dict[str, CpsSettings] = {}
    moh: dict[str, MohMeta] = {}
    for key, raw in entries.items():
        if key == Keys.CONFIG_SERIAL:
            continue
        try:
            _parse_record(key, raw, pools, ranges, cps, moh)
        except StoreDataError as exc:
            if on_malformed is None:
                raise
            on_malformed(key, exc)
    return AdminState(pools, ranges, cps, moh)


def _parse_record(
    key: str,
    raw: bytes,
    pools: dict[str, Pool],
    ranges: dict[str, OrbitRange],
    cps: dict[str, CpsSettings],
    moh: dict[str, MohMeta],
) -> None:
    data = decode(key, raw)
    try:
        if key.startswith(Keys.POOLS):
            name = key[len(Keys.POOLS) :]
            pool = Pool.from_json(data)
            if pool.name != name:
                raise ValueError(f"pool record names {pool.name!r}, not the pool of its key")
            pools[name] = pool
        elif key.startswith(Keys.RANGES):
            name = key[len(Keys.RANGES) :]
            rng = validate_range_shape(OrbitRange.from_json(data))
            if rng.name != name:
                raise ValueError(f"range record names {rng.name[:40]!r}, not the range of its key")
            ranges[name] = rng
        elif key.startswith(Keys.CPS):
            scope = key[len(Keys.CPS) :]
            if parse_scope(scope) != scope:
                raise ValueError("settings scope in the key is not normalised")
            cps[scope] = CpsSettings.from_json(data)
        elif key.startswith(Keys.MOH):
            moh[key[len(Keys.MOH) :]] = MohMeta.from_json(data)
    except (KeyError, TypeError, ValueError, OverflowError, ValidationError) as exc:
        raise StoreDataError(key, f"{exc.__class__.__name__}: {str(exc)[:200]}") from None


class AdminStore:
    """Reads the admin configuration and commits changes to it atomically."""

    def __init__(self, kv: KV, *, max_attempts: int = 50, decoder: RecordDecoder | None = None) -> None:
        """With ``decoder`` (services), malformed records are reported and skipped, not raised."""
        self.kv = kv
        self.max_attempts = max_attempts
        self.decoder = decoder

    def read(self) -> ReadResult:
        snap = self.kv.get_prefix(Keys.CONFIG)
        serial = snap.entries.get(Keys.CONFIG_SERIAL)
        state = parse_state({k: e.value for k, e in snap.entries.items()}, on_malformed=self._skipper(snap))
        return ReadResult(state, serial.mod_revision if serial else 0, snap.revision)

    def state(self) -> AdminState:
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
