"""What moving a range to another home pool will do, said before it is done (``orbit set --pool``)."""

from __future__ import annotations

from callpark.store.ownership import DrSnapshot


def plan(snap: DrSnapshot, range_name: str, new_home: str) -> str:
    """One paragraph: who serves the range now, who will, and what happens to its parked calls."""
    rng = snap.config.ranges.get(range_name)
    if rng is None or rng.pool == new_home:
        return ""
    owner = snap.owner_of(range_name)
    parked = sum(1 for c in snap.parked if c.range == range_name)
    pool = snap.config.pools.get(new_home)
    ready = bool(snap.ready_members(new_home))
    backup = pool.backup if pool else None
    if ready:
        where = f"the failover controller moves its owner to {new_home} within a cycle (epoch + 1, with an event)"
    elif backup and snap.ready_members(backup):
        where = (
            f"{new_home} has no ready node, so the controller moves it to {new_home}'s backup {backup} "
            f"until {new_home} is up and fails back ({pool.failback.value if pool else '?'} failback)"
        )
    else:
        where = f"neither {new_home} nor its backup has a ready node: the range stays with {owner} until one has"
    calls = (
        f"{parked} call(s) parked on it stay with their holders until retrieved, rung back or drained"
        if parked
        else "no call is parked on it"
    )
    return (
        f"range {range_name!r} is served by {owner} (home {rng.pool}); re-homing it to {new_home}: {where}; "
        f"new parks on it then land on the new owner; {calls}"
    )
