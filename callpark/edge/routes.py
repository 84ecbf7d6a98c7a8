"""The edge's live orbit routing table: ranges and their owners from etcd, as Kamailio htable rows.

The generated kamailio.cfg routes an orbit with the table in the ``callpark_routes`` htable
once it has been loaded (``gen`` > 0), and with the ranges rendered at start before that.
:mod:`callpark.edge.sync` keeps the table current. A row is one string,
``prefix|digits|low|high|set|backup|pool|range``, under ``r<gen>.<index>``; ``n<gen>`` is the
row count. A new table is written under a new generation and ``gen`` flips to it last, so a
request never sees half a table; the previous generation is deleted afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from callpark.model.orbits import OrbitRange, RangeType

ROUTES_HTABLE = "callpark_routes"


@dataclass(frozen=True)
class Route:
    """Orbits of one range and the dispatcher sets that serve them (owner first, its backup next)."""

    prefix: str  # "-" for none (an empty $var would read as 0 in kamailio.cfg)
    digits: int
    low: int
    high: int
    set_id: int
    backup_set: int  # 0: none
    pool: str
    range: str

    def row(self) -> str:
        fields = (self.prefix, self.digits, self.low, self.high, self.set_id, self.backup_set, self.pool, self.range)
        return "|".join(str(x) for x in fields)


def routes(
    ranges: Mapping[str, OrbitRange],
    owners: Mapping[str, str],
    backups: Mapping[str, str | None],
    set_ids: Mapping[str, int],
) -> tuple[list[Route], list[str]]:
    """The table for the edge, and one line per range it cannot route (pool without a set).

    ``owners``: range name -> the pool serving it now (its home pool when no owner is known);
    ``backups``: pool -> its backup pool; ``set_ids``: pool -> dispatcher set of this edge.
    Group pickup ranges are not park orbits and are left out.
    """
    table: list[Route] = []
    skipped: list[str] = []
    for name, rng in sorted(ranges.items()):
        if rng.type != RangeType.CALL_PARK:
            continue
        pool = owners.get(name) or rng.pool
        if pool not in set_ids:
            skipped.append(f"range {name}: pool {pool} has no dispatcher set on this edge (re-render the edge)")
            continue
        backup = backups.get(pool)
        table.append(
            Route(
                prefix=rng.prefix or "-",
                digits=rng.width,
                low=rng.first.value,
                high=rng.last.value,
                set_id=set_ids[pool],
                backup_set=set_ids.get(backup, 0) if backup else 0,
                pool=pool,
                range=name,
            )
        )
    return table, skipped
