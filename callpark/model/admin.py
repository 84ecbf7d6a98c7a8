"""Admin configuration: pools, the orbit table, Call Park settings and music metadata.

Pure state and rules, no I/O: every command is a transition of an :class:`AdminState`
(validated as a whole by :func:`validate_state` after the change). The store commits a
transition atomically (:class:`callpark.store.admin.AdminStore`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from callpark.errors import NotFound, ValidationError
from callpark.model.music import MohMeta
from callpark.model.orbits import OrbitRange, RangeType, find_overlap, validate_range_shape, validate_table
from callpark.model.pools import FailbackPolicy, Pool, validate_name, validate_pools
from callpark.model.settings import DEFAULTS, GLOBAL_SCOPE, CpsSettings, effective_settings, parse_scope

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
    """Change a scope's settings; a site scope not yet there is created from the defaults.

    Lync's Set-CsCpsConfiguration needs New-CsCpsConfiguration first; here ``cps set`` on a
    new site works as the README shows (``cps new`` still refuses an existing scope).
    """
    scope = parse_scope(scope)
    current = state.cps.get(scope, DEFAULTS) if scope != GLOBAL_SCOPE else state.settings(scope)
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
