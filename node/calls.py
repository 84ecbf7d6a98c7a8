"""The calls this node holds: their records as last read or written, and the writes still owed.

The parked-call state machine (``parked/<orbit>``, :class:`~callpark.store.records.CallState`)::

    (absent) --allocate--> PARKED --claim--> RETRIEVING --free(retrieved)--> (absent)
                           PARKED --claim--> RINGING --unanswered--> PARKED (attempts+1, re-armed)
                                             RINGING --last try--> FORWARDING --free--> (absent)
                           PARKED|RINGING|RETRIEVING --caller hangs up / lost--> free --> (absent)
    any state of a gone or draining holder --take over--> PARKED (held by us)

Who holds a call: ``holder`` names the node as ``pool/node`` plus its *incarnation* (a random
id per process start, also published in the member key; :class:`~callpark.store.records.NodeId`).
"Ours" is ``me.holds(holder)``: same pool and name, any incarnation (a restarted node takes its
own calls back, and stamps its incarnation on them in that claim); ``pool-b/n1`` never counts
``pool-a/n1``'s calls as its own. Records written before these fields existed are matched by
the bare name, as before. Takeovers (the ``take over`` edge) reserve a worker slot until the
worker answers; a worker that is full answers ``full`` and the call waits for another worker
(``moving``, retried), it is never recorded lost for want of a slot. The take-over claim of a
gone or draining holder's call also compares that holder's member key as the scan read it.

Every write is one guarded transaction (:mod:`callpark.store.parking`) and carries a fresh
``write_id``; a write that times out (:class:`~callpark.errors.StoreIndeterminate`) is resolved
by reading the record back: our write id there means it applied and the node goes on as if the
write had answered. What happens when that read fails too, per write:

* **allocate**: read back and applied -> the park is answered as usual (we keep serving it).
  Not applied -> 503. Unknown -> 503, and the record is remembered as a *ghost*
  (:meth:`HeldCalls.ghost`): :meth:`HeldCalls.resolve_ghosts` frees it (outcome abandoned)
  once etcd answers, since no caller is behind it.
* **claim** (retrieving, ringing): applied -> go on (connect, ring). Not applied -> adopt the
  record etcd holds (drop the stale view), refuse. Unknown -> refuse, and owe a roll-back to
  ``parked`` that applies only if etcd holds our claim's write id (so the orbit never stays
  "busy" for every later retriever).
* **update** (answered dialog, attended re-dialog, takeover result, ringback count and re-arm):
  not applied or unknown -> owed (:attr:`HeldCalls.owed`) and retried every cycle by
  :meth:`HeldCalls.retry_owed` on a fresh read, until done or the record is gone or names
  another holder (taken over). Re-applying an owed change that had applied is harmless. The
  takeover of an own call writes the owed changes in its claim (:meth:`HeldCalls.with_owed`).
* **free**: unknown -> kept in ``pending_free`` and retried (:meth:`HeldCalls.retry_frees`);
  a record that is gone or names another park id was freed already.
* **take over** (claim of another node's call): applied -> ours; not applied -> the next scan
  sees the record as it is and tries again. Unknown -> the next scan settles it by the write id
  (:meth:`~callpark.node.takeover.Takeovers.scan`): ours -> a worker takes the caller over.
  Our own calls after a restart or a worker crash: a failed claim is retried every cycle
  (``Takeovers.retake``), and the read of our records after a restart until it succeeds.
* **member key** (:mod:`~callpark.node.membership`): compared with what etcd holds when read
  back, so a "ready" write that timed out having applied (or not) is corrected next cycle.

A call is not rung back while a worker is taking it over (``moving``): the worker does not
hold it yet and would answer "not held here", which counted as an unanswered ringback
(found by tests/node/test_restart.py: a call recovered after its deadline was disconnected).

Lock: :attr:`HeldCalls.lock` (re-entrant) guards ``held``, ``pending_free``, ``owed``,
``ghosts``, ``moving`` and ``started``. Updates and frees of a held call, retrieval and ringback claims,
and the takeover of our own calls keep it across their etcd transaction, so no two threads
write one record from stale revisions; an allocation (under its own lock) and the takeover of
another node's call write first and take it only to store the result. The node's three locks
(this one, the allocation lock of :mod:`~callpark.node.decisions` and the config lock of
:mod:`~callpark.node.views`) never nest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from callpark.errors import StoreError
from callpark.node.context import NodeContext, NodePart
from callpark.store.parking import Fenced, Held, LostRace, Unapplied, Unresolved
from callpark.store.records import CallState, Outcome, ParkedCall

log = logging.getLogger(__name__)

Change = Callable[[ParkedCall], ParkedCall]
MAX_STARTED = 1024  # start times of INVITEs not yet answered or ended; the oldest go first


class HeldCalls(NodePart):
    """The node's parked calls (``held``, by orbit) and the writes that change them."""

    def __init__(self, ctx: NodeContext) -> None:
        super().__init__(ctx)
        self.pool = ctx.config.pool
        self.lock = threading.RLock()
        self.held: dict[str, Held] = {}
        self.pending_free: dict[str, tuple[str, Outcome, str]] = {}  # orbit -> (park id, outcome, detail)
        self.owed: dict[str, tuple[str, list[Change]]] = {}  # orbit -> (park id, changes not yet in etcd)
        self.ghosts: dict[str, ParkedCall] = {}  # orbit -> an allocation whose outcome is unknown
        self.moving: set[str] = set()  # orbits a worker is taking over (INVITE/Replaces in flight)
        # (worker, call) -> (perf_counter of its INVITE, orbit); bounded, dropped when the orbit is freed
        self.started: OrderedDict[tuple[int, str], tuple[float, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.held)

    def get(self, orbit: str) -> Held | None:
        with self.lock:
            return self.held.get(orbit)

    # -- INVITE start times (latency metrics) -------------------------------------------------

    def note_start(self, worker: int, call: str, orbit: str, age_s: float) -> None:
        """Remember when ``call``'s INVITE arrived (it was ``age_s`` old when we decided)."""
        with self.lock:
            self.started[(worker, call)] = (time.perf_counter() - age_s, orbit)
            while len(self.started) > MAX_STARTED:
                self.started.popitem(last=False)

    def pop_start(self, worker: int, call: str) -> float | None:
        with self.lock:
            entry = self.started.pop((worker, call), None)
        return None if entry is None else entry[0]

    def _forget_starts(self, orbit: str) -> None:
        for key in [k for k, (_, o) in self.started.items() if o == orbit]:
            del self.started[key]

    # -- updates, owed until etcd has them ---------------------------------------------------

    def mutate(self, orbit: str, change: Change) -> Held | None:
        """Apply ``change`` to the held record; owed (and retried) when etcd fails.

        Returns the record as written, or as it will be once the owed write is done; None
        when the call is no longer ours.
        """
        with self.lock:
            held = self.held.get(orbit)
            if held is None:
                return None
            park_id, owed = self.owed.get(orbit, (held.call.park_id, []))
            changes = [*owed, change] if park_id == held.call.park_id else [change]
            return self._write(held, changes)

    def with_owed(self, call: ParkedCall) -> ParkedCall:
        """``call`` with the changes still owed to its record applied (a claim carries them)."""
        with self.lock:
            park_id, changes = self.owed.get(call.orbit, (call.park_id, []))
        if park_id != call.park_id:
            return call
        for change in changes:
            call = change(call)
        return call

    def _write(self, held: Held, changes: list[Change]) -> Held | None:
        """Write ``changes`` over ``held`` (re-reading once when stale); owe them when etcd fails."""
        orbit = held.call.orbit
        for _ in range(2):
            call = held.call
            for change in changes:
                call = change(call)
            if call == held.call:
                self.owed.pop(orbit, None)
                return held
            try:
                written = self.table.update(held, call)
            except (LostRace, Unapplied) as exc:
                try:
                    fresh = exc.current if isinstance(exc, Unapplied) else self.table.refresh(held)
                except StoreError:
                    break
                if not self._adopt(held, fresh):
                    return None
                assert fresh is not None
                held = fresh
                continue
            except (Fenced, StoreError) as exc:
                log.warning("could not update orbit %s (will retry): %s", orbit, exc)
                break
            self.held[orbit] = written
            self.owed.pop(orbit, None)
            return written
        self.owed[orbit] = (held.call.park_id, changes)
        return Held(call, held.mod_revision)

    def _adopt(self, held: Held, current: Held | None) -> bool:
        """Take what etcd holds as our view; False (and forgotten) when it is gone or another's."""
        orbit = held.call.orbit
        if current is None or current.call.park_id != held.call.park_id or not self.me.holds(current.call.holder):
            self.held.pop(orbit, None)
            self.owed.pop(orbit, None)
            return False
        self.held[orbit] = current
        return True

    def retry_owed(self) -> None:
        """Write the owed changes on a fresh read, until done or the call is no longer ours."""
        if not self.owed or not self.is_valid() or self.kv.unreachable():
            return
        for orbit, (park_id, changes) in list(self.owed.items()):
            with self.lock:
                held = self.held.get(orbit)
                if held is None or held.call.park_id != park_id or orbit in self.pending_free:
                    self.owed.pop(orbit, None)
                    continue
                try:
                    fresh = self.table.refresh(held)
                except StoreError:
                    return
                if self._adopt(held, fresh):
                    assert fresh is not None
                    self._write(fresh, changes)

    # -- claims (retrieving, ringing) -----------------------------------------------------------

    def claim(self, held: Held, state: CallState) -> Held:
        """Move a parked call to ``state``; raises LostRace, Fenced or StoreError if not done.

        On a lost race or a write that did not apply the view is refreshed from etcd; on an
        unknown outcome a roll-back to ``parked`` is owed (see the module docstring).
        """
        orbit = held.call.orbit
        with self.lock:
            try:
                claimed = self.table.claim(held, state)
            except LostRace:
                try:
                    self._adopt(held, self.table.refresh(held))
                except StoreError as exc:
                    log.debug("orbit %s not re-read after a lost race: %s", orbit, exc)
                raise
            except Unapplied as exc:
                self._adopt(held, exc.current)
                raise
            except Unresolved as exc:
                write_id = exc.call.write_id
                back: Change = lambda c: c.with_state(CallState.PARKED) if c.write_id == write_id else c  # noqa: E731
                self.owed[orbit] = (held.call.park_id, [back])
                raise
            self.held[orbit] = claimed
            return claimed

    # -- allocations whose outcome is unknown ------------------------------------------------------

    def ghost(self, call: ParkedCall) -> None:
        """An allocation timed out and could not be read back; the caller was refused."""
        with self.lock:
            self.ghosts[call.orbit] = call

    def resolve_ghosts(self) -> None:
        """Free each ghost allocation that did apply (no caller is behind it); forget the rest."""
        if not self.ghosts or not self.is_valid() or self.kv.unreachable():
            return
        for orbit, call in list(self.ghosts.items()):
            try:
                current = self.table.get(orbit)
            except StoreError:
                return
            with self.lock:
                self.ghosts.pop(orbit, None)
                if current is None or current.call.write_id != call.write_id:
                    continue
                self.held[orbit] = current
            log.warning("orbit %s: an allocation that timed out had applied; freeing it", orbit)
            self.free(current, Outcome.ABANDONED, "allocation timed out; the caller was refused")

    # -- frees -------------------------------------------------------------------------------------

    def free(self, held: Held, outcome: Outcome, detail: str) -> None:
        """Record the end of a call and forget it; kept for :meth:`retry_frees` when etcd fails."""
        with self.lock:
            self._forget_starts(held.call.orbit)
            self.owed.pop(held.call.orbit, None)
            self.moving.discard(held.call.orbit)
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
                    if refreshed is None or not self.me.holds(refreshed.call.holder):
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
                or not self.me.holds(current.call.holder)  # taken over: never free what is not ours
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

    def retry(self) -> None:
        """Every loop cycle: the frees, owed updates and ghost allocations etcd does not have yet."""
        self.retry_frees()
        self.retry_owed()
        self.resolve_ghosts()
