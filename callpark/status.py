"""``callpark status``: what the cluster holds right now, as text or JSON."""

from __future__ import annotations

from typing import Any

from callpark import tables
from callpark.model.orbits import RangeType
from callpark.model.settings import GLOBAL_SCOPE, format_timespan
from callpark.store.admin import AdminStore
from callpark.store.etcd import EtcdStore


def collect(store: EtcdStore, admin_store: AdminStore) -> dict[str, Any]:
    """One consistent view: etcd health, pools, ranges, settings and music."""
    read = admin_store.read()
    state = read.state
    pools = []
    for name, pool in sorted(state.pools.items()):
        scope, eff = state.effective(name)
        moh = state.moh.get(name)
        pools.append(
            {
                **pool.to_json(),
                "settings_scope": scope,
                "callpark_orbits": sum(r.size for r in state.ranges_of(name, RangeType.CALL_PARK)),
                "grouppickup_numbers": sum(r.size for r in state.ranges_of(name, RangeType.GROUP_PICKUP)),
                "music": moh.to_json() if moh else {"source": "default"},
                "effective_settings": eff.to_json(),
            }
        )
    cps = {GLOBAL_SCOPE: state.settings(GLOBAL_SCOPE).to_json()}
    cps.update({s: v.to_json() for s, v in sorted(state.cps.items())})
    return {
        "etcd": {
            "revision": read.revision,
            "endpoints": [h.__dict__ for h in store.endpoint_health()],
        },
        "pools": pools,
        "ranges": [r.to_json() | {"size": r.size} for r in sorted(state.ranges.values(), key=lambda r: r.name)],
        "cps": cps,
    }


def render(view: dict[str, Any]) -> str:
    """The human-readable status report."""
    etcd = view["etcd"]
    parts = [
        f"etcd (revision {etcd['revision']})",
        tables.render(
            ["ENDPOINT", "HEALTH"], [(e["url"], "healthy" if e["healthy"] else e["detail"]) for e in etcd["endpoints"]]
        ),
        "",
        "Pools",
        tables.render(
            ["POOL", "SITE", "BACKUP", "FAILBACK", "ORBITS", "SETTINGS", "MUSIC"],
            [
                (
                    p["name"],
                    p["site"],
                    p["backup"] or "-",
                    p["failback"],
                    p["callpark_orbits"],
                    p["settings_scope"],
                    p["music"].get("filename") or "default",
                )
                for p in view["pools"]
            ],
        ),
        "",
        "Orbit ranges",
        tables.render(
            ["NAME", "START", "END", "SIZE", "TYPE", "POOL"],
            [(r["name"], r["start"], r["end"], r["size"], r["type"], r["pool"]) for r in view["ranges"]],
        ),
        "",
        "Call Park settings",
        tables.render(
            ["SCOPE", "CallPickupTimeoutThreshold", "EnableMusicOnHold", "MaxCallPickupAttempts", "OnTimeoutURI"],
            [
                (
                    scope,
                    s["CallPickupTimeoutThreshold"],
                    s["EnableMusicOnHold"],
                    s["MaxCallPickupAttempts"],
                    s["OnTimeoutURI"] or "-",
                )
                for scope, s in view["cps"].items()
            ],
        ),
    ]
    return "\n".join(parts)


__all__ = ["collect", "format_timespan", "render"]
