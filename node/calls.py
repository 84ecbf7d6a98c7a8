"""The calls this node holds: their records as last written, and the ends still to record.

Lock: :attr:`HeldCalls.lock` (re-entrant) guards ``held`` and ``pending_free``. Updates
and frees of a held call, retrieval and ringback claims, and the takeover of our own calls
keep it across their etcd transaction, so no two threads write one record from stale
revisions; an allocation (under its own lock) and the takeover of another node's call
write first and take it only to store the result. Reads that pick calls to act on take
it briefly. ``started`` is written under it and popped without it (one key per call).
The node's three locks (this one, the allocation lock of :mod:`~callpark.node.decisions`
and the config lock of :mod:`~callpark.node.views`) never nest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from callpark.errors import StoreError
from callpark.node.context import NodeContext, NodePart
from callpark.store.parking import Fenced, Held, LostRace
from callpark.store.records import Outcome, ParkedCall

log = logging.getLogger(__name__)


class HeldCalls(NodePart):
    """The node's parked calls (``held``, by orbit) and the writes that change them."""

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.node = ctx.config.name
        self.pool = ctx.config.pool
        self.lock = threading.RLock()
        self.held: dict[str, Held] = {}
        self.pending_free: dict[str, tuple[str, Outcome, str]] = {}  # orbit -> (park id, outcome, detail)
        self.started: dict[tuple[int, str], float] = {}  # (worker, call) -> perf_counter of its INVITE

    def __len__(self) -> int:
        return len(self.held)

    def get(self, orbit: str) -> Held | None:
        with self.lock:
            return self.held.get(orbit)

    def mutate(self, orbit: str, change: Callable[[ParkedCall], ParkedCall]) -> Held | None:
        """Apply ``change`` to the held record, re-reading once if our cached revision is stale."""
        with self.lock:
            held = self.held.get(orbit)
            for _ in range(2):
                if held is None:
                    return None
                try:
                    held = self.table.update(held, change(held.call))
                    self.held[orbit] = held
                    return held
                except LostRace:
                    held = self.table.refresh(held)
                    if held is None or held.call.holder.node != self.node:
                        self.held.pop(orbit, None)
                        return None
                except (Fenced, StoreError) as exc:
                    log.warning("could not update orbit %s: %s", orbit, exc)
                    return None
            return None

    def free(self, held: Held, outcome: Outcome, detail: str) -> None:
        """Record the end of a call and forget it; kept for :meth:`retry_frees` when etcd fails."""
        with self.lock:
            current = self.held.get(held.call.orbit, held)
            if self.kv.unreachable():
                # do not hold up this worker's next requests with a write that will time out
                self.pending_free[held.call.orbit] = (held.call.park_id, outcome, detail)
                return
            for _ in range(2):
                try:
                    self.table.free(current, outcome, detail)
                    break
                except LostRace:
                    refreshed = self.table.refresh(current)
                    if refreshed is None or refreshed.call.holder.node != self.node:
                        # gone, or taken over by another node: never free what is not ours
                        self.held.pop(held.call.orbit, None)
                        return
                    current = refreshed
                except (Fenced, StoreError) as exc:
                    # The call is over; retry recording it every cycle (found by the chaos suite:
                    # a free lost to etcd quorum loss left the orbit parked, then rang back).
                    log.warning("could not free orbit %s (will retry): %s", held.call.orbit, exc)
                    self.pending_free[held.call.orbit] = (held.call.park_id, outcome, detail)
                    return
            self.held.pop(held.call.orbit, None)
            self.pending_free.pop(held.call.orbit, None)
        self.metrics.ended.labels(self.pool, outcome.value).inc()

    def retry_frees(self) -> None:
        """Record the ends of calls whose free failed (etcd unreachable or indeterminate)."""
        if not self.pending_free or not self.is_valid() or self.kv.unreachable():
            return
        for orbit, (park_id, outcome, detail) in list(self.pending_free.items()):
            with self.lock:
                held = self.held.get(orbit)
            try:
                current = self.table.refresh(held) if held is not None else None
            except StoreError:
                return
            if (
                held is None
                or current is None
                or current.call.park_id != park_id
                or current.call.holder.node != self.node  # taken over: never free what is not ours
            ):
                with self.lock:  # already recorded (an indeterminate txn that applied) or not ours
                    self.pending_free.pop(orbit, None)
                    if held is not None and held.call.park_id == park_id:
                        self.held.pop(orbit, None)
                continue
            with self.lock:
                self.held[orbit] = current
            self.free(current, outcome, detail)

    def lose(self, held: Held, reason: str) -> None:
        """Record a call we cannot keep as lost (counted by the reason's first word)."""
        log.warning("parked call on orbit %s lost: %s", held.call.orbit, reason)
        self.metrics.lost.labels(self.pool, reason.split(":")[0][:40]).inc()
        self.free(held, Outcome.LOST, reason)
