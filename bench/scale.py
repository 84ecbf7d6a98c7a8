"""Cluster scale: many parked-call records in etcd, written directly, and what they cost.

The records belong to a pool of their own (``pool-scale``) that no node serves, so nothing
takes them over; the bench node keeps serving its own pool while they exist, and what it
spends on them (CPU per cycle, park latency) is what a node pays for the size of the
cluster's parked state. Orbits ``500000``-``5xxxxx`` (ranges of at most 9,999, Lync's limit);
all are removed with one prefix delete afterwards.
"""

from __future__ import annotations

import functools
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from callpark.model import admin
from callpark.model.admin import AdminState
from callpark.model.orbits import MAX_ORBITS_PER_RANGE, OrbitRange
from callpark.store.admin import AdminStore
from callpark.store.etcd import EtcdStore
from callpark.store.kv import Delete, Put
from callpark.store.ownership import read_snapshot
from callpark.store.parking import read_parked
from callpark.store.records import CallState, Dialog, Holder, ParkedCall, ParkKind
from callpark.store.schema import Keys

POOL = "pool-scale"
SITE = "site-scale"
FIRST_ORBIT = 500_000
BATCH = 100  # puts per txn (etcd's default --max-txn-ops is 128)


def _ranges(count: int) -> list[OrbitRange]:
    ranges: list[OrbitRange] = []
    start = FIRST_ORBIT
    while count > 0:
        size = min(count, MAX_ORBITS_PER_RANGE)
        ranges.append(OrbitRange(f"scale{len(ranges)}", str(start), str(start + size - 1), POOL))
        start += size
        count -= size
    return ranges


def _record(orbit: int, rng: OrbitRange, now: float) -> ParkedCall:
    tag = uuid.uuid4().hex[:12]
    return ParkedCall(
        orbit=str(orbit),
        park_id=uuid.uuid4().hex,
        pool=POOL,
        range=rng.name,
        kind=ParkKind.BLIND,
        state=CallState.PARKED,
        holder=Holder("scale-n1", 0, "127.0.0.1:9", pool=POOL, incarnation="bench"),
        dialog=Dialog(f"{tag}@scale", "lt" + tag, "rt" + tag, "sip:c@127.0.0.1:9", "sip:c@127.0.0.1", True),
        caller_uri=f"sip:caller{orbit}@127.0.0.1",
        parker_uri=f"sip:parker{orbit}@127.0.0.1",
        parked_at=now,
        deadline=now + 3600,
        attempts=0,
        owner_epoch=1,
        write_id=tag,
    )


def _add_range(state: AdminState, *, rng: OrbitRange) -> AdminState:
    return admin.new_range(state, rng)


def write_records(store: EtcdStore, count: int) -> float:
    """Create the scale pool, its ranges and ``count`` parked records; returns seconds taken."""
    began = time.monotonic()
    admin_store = AdminStore(store)
    admin_store.change(lambda s: admin.new_pool(s, POOL, SITE))
    ranges = _ranges(count)
    for rng in ranges:
        admin_store.change(functools.partial(_add_range, rng=rng))
    now = time.time()
    ops: list[Put] = []
    for rng in ranges:
        for orbit in range(int(rng.first.digits), int(rng.last.digits) + 1):
            call = _record(orbit, rng, now)
            ops.append(Put(Keys.parked(call.orbit), call.to_bytes()))
            if len(ops) == BATCH:
                store.txn([], ops)
                ops = []
    if ops:
        store.txn([], ops)
    return time.monotonic() - began


def remove_records(store: EtcdStore, count: int) -> None:
    """Delete the records (one prefix delete), then the ranges and the pool."""
    store.txn([], [Delete(Keys.parked(str(FIRST_ORBIT)[0]), prefix=True)])
    admin_store = AdminStore(store)
    for rng in _ranges(count):
        admin_store.change(functools.partial(admin.remove_range, name=rng.name))
    admin_store.change(lambda s: admin.remove_pool(s, POOL))


def timed(fn: Callable[[], Any], repeat: int = 3) -> float:
    """The median of ``repeat`` timings of ``fn``, in seconds."""
    took = []
    for _ in range(repeat):
        began = time.monotonic()
        fn()
        took.append(time.monotonic() - began)
    return statistics.median(took)


def read_costs(store: EtcdStore) -> dict[str, float]:
    """How long the controller's snapshot and a full parked/ read take now."""
    return {
        "controller_snapshot_s": round(timed(lambda: read_snapshot(store)), 3),
        "read_parked_s": round(timed(lambda: read_parked(store)), 3),
    }
