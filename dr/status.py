"""``callpark dr status``: pools, members, range owners, epochs, parked calls and the last
DR events, from one snapshot, as a JSON-ready view or as text tables."""

from __future__ import annotations

import time
from typing import Any

from callpark import tables
from callpark.store.kv import KV
from callpark.store.ownership import DrSnapshot, events, read_snapshot


def collect(kv: KV, last_events: int = 10) -> dict[str, Any]:
    """The DR view: revision, leader, pools (with members), ranges and the last events."""
    snap = read_snapshot(kv)
    return {
        "revision": snap.revision,
        "leader": snap.leader,
        "pools": _pools(snap),
        "ranges": _ranges(snap),
        "events": events(kv, last=last_events),
    }


def _pools(snap: DrSnapshot) -> list[dict[str, Any]]:
    return [
        {
            "pool": name,
            "site": pool.site,
            "backup": pool.backup,
            "up": bool(snap.ready_members(name)),
            "members": [
                {"node": m.node, "ready": m.ready, "draining": m.draining, "parked": m.info.get("parked", 0)}
                for m in snap.members.get(name, [])
            ],
            "owns": snap.ranges_owned_by(name),
            "failback": pool.failback.value,
        }
        for name, pool in sorted(snap.config.pools.items())
    ]


def _ranges(snap: DrSnapshot) -> list[dict[str, Any]]:
    return [
        {
            "range": r,
            "home": rng.pool,
            "owner": snap.owner_of(r),
            "epoch": snap.owners[r].epoch if r in snap.owners else 0,
            "parked": sum(1 for c in snap.parked if c.range == r),
        }
        for r, rng in sorted(snap.config.ranges.items())
    ]


def render(view: dict[str, Any]) -> str:
    """The view of :func:`collect` as a header line and four titled tables."""
    leader = view["leader"] or {}
    who = f"{leader.get('name', 'none')} (token {leader.get('token', '-')})"
    pools, ranges = view["pools"], view["ranges"]
    pool_rows = [
        (
            p["pool"],
            p["site"],
            p["backup"] or "-",
            "yes" if p["up"] else "NO",
            ",".join(m["node"] for m in p["members"] if m["ready"]) or "-",
            ",".join(p["owns"]) or "-",
            p["failback"],
        )
        for p in pools
    ]
    member_rows = [(p["pool"], m["node"], m["ready"], m["draining"], m["parked"]) for p in pools for m in p["members"]]
    parts = [
        f"controller leader: {who}, etcd revision {view['revision']}",
        "\nPools",
        tables.render(["POOL", "SITE", "BACKUP", "UP", "READY NODES", "OWNS", "FAILBACK"], pool_rows),
        "\nMembers",
        tables.render(["POOL", "NODE", "READY", "DRAINING", "PARKED"], member_rows, empty="(no live park node)"),
        "\nRanges",
        tables.render(
            ["RANGE", "HOME", "OWNER", "EPOCH", "PARKED"],
            [(r["range"], r["home"], r["owner"], r["epoch"], r["parked"]) for r in ranges],
        ),
        "\nLast events",
        _render_events(view["events"]),
    ]
    return "\n".join(parts)


def _render_events(last: list[dict[str, Any]]) -> str:
    return tables.render(
        ["AT", "KIND", "POOL", "TO", "RANGES", "PARKED", "WHY"],
        [
            (
                time.strftime("%H:%M:%S", time.localtime(float(e.get("at", 0)))),
                e.get("kind"),
                e.get("pool"),
                e.get("to", "-"),
                ",".join(e.get("ranges", [])) or "-",
                e.get("parked_calls", "-"),
                e.get("why", ""),
            )
            for e in last
        ],
        empty="(no events)",
    )
