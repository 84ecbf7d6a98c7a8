"""Takeovers: parked calls moved to a live worker of this node, and the drain scan.

A call is taken over (INVITE with Replaces from one of our workers) when its worker died
and was restarted, when this node restarted and finds records that still name it, or when
the takeover scan (every ``SCAN_S``) finds a call on a range our pool owns whose holder
node is gone or draining. The scan also reads this node's drain key and the live members.

Identity: a node is ``pool/name`` (:class:`~callpark.store.records.NodeId`); records that
name ``pool-a/n1`` are never adopted by ``pool-b/n1``. Live members are keyed ``pool/node``.

Capacity: every takeover reserves a slot (``WorkerPool.pick(reserve=True)``) until the
worker's ``takeover_result``; a worker that is full anyway answers ``full`` and the call
goes back to ``retake`` (another worker, or a later cycle), never to "lost". With no slot
anywhere an own call waits in ``retake`` (``moving``, so not rung back meanwhile), for at most
the pickup time-out; then it is recorded lost. The claim of an own call carries the changes
still owed to its record (:meth:`~callpark.node.calls.HeldCalls.with_owed`): an attended park's
new dialog whose write timed out is the dialog the INVITE/Replaces must name.

The claim of another node's call also compares that node's member key as the scan read it
(absent, or the revision of a live draining node's key): a holder that rejoins between the
scan's reads and the claim keeps its call.

Locks: claims and record changes hold ``HeldCalls.lock`` (see :mod:`~callpark.node.calls`);
the scan writes ``draining``, ``live_nodes`` and ``last_refresh`` of the
:class:`~callpark.node.views.ClusterView` without a lock, on the loop thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from callpark.errors import StoreError
from callpark.node.calls import HeldCalls
from callpark.node.context import NodeContext, NodePart
from callpark.node.protocol import Message, dialog_json
from callpark.node.views import ClusterView
from callpark.node.workers import WorkerHandle, WorkerPool
from callpark.store.parking import Fenced, Held, LostRace, Unresolved
from callpark.store.records import CallState, Dialog, Outcome, ParkedCall, RecordKind, parse_members, parse_stamp
from callpark.store.schema import Keys

log = logging.getLogger(__name__)

DECLINED = 603  # the answer to a Replaces of a dialog that ended (RFC 3891 3)

SCAN_S = 0.5


class Takeovers(NodePart):
    """Moves calls to our workers: after a worker or node restart, and from gone or draining nodes."""

    def __init__(self, ctx: NodeContext, *, calls: HeldCalls, view: ClusterView, workers: WorkerPool) -> None:
        super().__init__(ctx)
        self.calls = calls
        self.view = view
        self.workers = workers
        self.last_scan = 0.0
        self.recovered = False  # our records of before a restart were read (see recover_own_calls)
        self.retake: dict[str, str] = {}  # orbit -> park id: own calls whose takeover claim failed
        self.unsure: dict[str, str] = {}  # orbit -> write id: claims of other nodes' calls that timed out
        self.no_slot_since: dict[str, float] = {}  # orbit -> when an own call first found no worker slot
        self.clock: Callable[[], float] = time.monotonic

    def _send(self, target: WorkerHandle, call: ParkedCall) -> None:
        """Ask ``target`` to INVITE the caller with Replaces (answered by ``takeover_result``)."""
        with self.calls.lock:
            self.calls.moving.add(call.orbit)  # no ringback before the worker holds the call
        target.send(
            "takeover",
            orbit=call.orbit,
            park_id=call.park_id,
            dialog=dialog_json(call.dialog),
            music=self.view.settings.enable_music_on_hold,
            music_path=self.view.home_music(call.range),
        )

    # -- our own calls ------------------------------------------------------------------------------

    def take_over(self, held: Held) -> None:
        """Move one of our own calls (its worker or this node restarted) to a worker with room.

        A claim etcd does not confirm is retried by :meth:`retry` until done or not ours.
        """
        orbit = held.call.orbit
        self.retake.pop(orbit, None)
        if not held.call.dialog.supports_replaces:
            # INVITE/Replaces to a UA without it would ring it as a new call: never do that
            self.calls.lose(held, "caller without Replaces support")
            return
        target = self.workers.pick(need=1, reserve=True)
        if target is None:
            log.warning("orbit %s: no free worker slot for its takeover yet (will retry)", orbit)
            self._later(held)
            return
        with self.calls.lock:
            claimed = self._claim_own(held, target)
            if claimed is None:
                self.workers.release(target)
                if orbit in self.retake:
                    self.calls.moving.add(orbit)  # its worker is gone: no ringback to it meanwhile
                return
            self.calls.held[orbit] = claimed
        self._send(target, claimed.call)

    def _claim_own(self, held: Held, target: WorkerHandle) -> Held | None:
        """Stamp our incarnation on our own call, with the changes still owed (``HeldCalls.owed``).

        The owed changes (e.g. an attended park's new dialog whose write timed out) go into the
        claim, so the INVITE/Replaces names the dialog the caller has, not a stale one. None:
        not ours any more, or etcd failed (then retried by :meth:`retry`).
        """
        orbit = held.call.orbit
        for attempt in range(2):
            try:
                mine = replace(held.call.holder, pool=self.me.pool, incarnation=self.me.incarnation)
                call = replace(self.calls.with_owed(held.call), holder=mine, state=CallState.PARKED)
                claimed = self.table.update(held, call)
                self.calls.owed.pop(orbit, None)
                return claimed
            except LostRace:
                try:
                    fresh = self.table.refresh(held) if attempt == 0 else None
                except StoreError as exc:
                    log.warning("orbit %s not re-read for its takeover (will retry): %s", orbit, exc)
                    self.retake[orbit] = held.call.park_id
                    return None
                if fresh is None or not self.me.holds(fresh.call.holder):
                    log.warning("orbit %s is no longer ours to take over", orbit)
                    self.calls.held.pop(orbit, None)
                    self.calls.owed.pop(orbit, None)
                    return None
                held = fresh
            except (Fenced, StoreError) as exc:
                log.warning("cannot claim orbit %s for takeover (will retry): %s", orbit, exc)
                self.retake[orbit] = held.call.park_id
                return None
        self.retake[orbit] = held.call.park_id  # raced twice: next cycle
        return None

    def _later(self, held: Held) -> None:
        """No slot for this own call now: retried by :meth:`retry`; not rung back meanwhile.

        The wait is bounded: an own call that found no slot for longer than the pickup time-out
        (``CallPickupTimeoutThreshold``, what a parked call may wait anyway) is recorded lost,
        rather than kept waiting for a worker forever while its caller hears nothing.
        """
        orbit = held.call.orbit
        since = self.no_slot_since.setdefault(orbit, self.clock())
        if self.clock() - since > self.view.settings.call_pickup_timeout_s:
            self._forget(orbit)
            with self.calls.lock:
                self.calls.moving.discard(orbit)
            self.calls.lose(held, f"no worker slot: waited {self.clock() - since:.0f}s for its takeover")
            return
        with self.calls.lock:
            self.calls.moving.add(orbit)
        self.retake[orbit] = held.call.park_id

    def _forget(self, orbit: str) -> None:
        self.retake.pop(orbit, None)
        self.no_slot_since.pop(orbit, None)

    def worker_restarted(self, handle: WorkerHandle) -> None:
        """A dead worker is back (without its calls): take each of them over."""
        orphans = [h for h in list(self.calls.held.values()) if h.call.holder.worker == handle.index]
        for held in orphans:
            self.take_over(held)

    def recover_own_calls(self) -> bool:
        """After a restart: records that still name this node are ours to take over; False: retry."""
        try:
            mine = [h for h in self.table.all_parked() if self.me.holds(h.call.holder)]
        except StoreError as exc:
            log.warning("could not read parked calls (will retry): %s", exc)
            return False
        self.recovered = True
        for held in mine:
            with self.calls.lock:
                self.calls.held[held.call.orbit] = held
            self.take_over(held)
        return True

    def retry(self) -> None:
        """Every cycle, while etcd answers: recover our calls after a restart, retry failed claims."""
        if not self.is_valid() or self.kv.unreachable():
            return
        if not self.recovered:
            self.recover_own_calls()
            return
        for orbit, park_id in list(self.retake.items()):
            held = self.calls.get(orbit)
            if held is None or held.call.park_id != park_id:
                self._forget(orbit)
                continue
            self.take_over(held)
            if orbit in self.retake:
                return  # etcd still fails: next cycle

    def release_moved(self) -> None:
        """After a rejoin: drop (and have the worker forget) calls that now name another holder."""
        with self.calls.lock:
            for orbit, held in list(self.calls.held.items()):
                try:
                    current = self.table.refresh(held)
                except StoreError:
                    continue
                if current is None or current.call.holder != held.call.holder:
                    log.warning("orbit %s now belongs to another holder; releasing it locally", orbit)
                    self.calls.held.pop(orbit, None)
                    if 0 <= held.call.holder.worker < len(self.workers.handles):
                        self.workers.handles[held.call.holder.worker].send("release", orbit=orbit)

    def handle_result(self, w: WorkerHandle, msg: Message) -> None:
        """``takeover_result``: the call is ours on worker ``w`` now, or it is lost."""
        orbit = str(msg["orbit"])
        with self.calls.lock:
            self.calls.moving.discard(orbit)
        self.workers.release(w)
        held = self.calls.get(orbit)
        if held is None:
            return
        if msg.get("ok"):
            self.no_slot_since.pop(orbit, None)
            dialog = Dialog.from_json(msg["dialog"])
            holder = self.me.holder(w.index, w.sip(self.config.host))
            self.calls.mutate(orbit, lambda c: replace(c, holder=holder, dialog=dialog, state=CallState.PARKED))
            self.metrics.takeovers.labels(self.config.pool, "ok").inc()
        elif msg.get("full"):
            log.info("orbit %s: worker %d is full; another worker takes the call over", orbit, w.index)
            self._later(held)
        else:
            self.no_slot_since.pop(orbit, None)
            reason = str(msg.get("reason", "takeover failed"))
            if msg.get("code") == DECLINED:
                # RFC 3891: the caller's dialog had ended; it hung up while its holder was gone
                # (the edge saw its BYE): not a caller we lost
                self.metrics.takeovers.labels(self.config.pool, "caller-gone").inc()
                self.calls.free(held, Outcome.ABANDONED, f"the caller had hung up: {reason}")
                return
            self.metrics.takeovers.labels(self.config.pool, "failed").inc()
            self.calls.lose(held, reason)

    # -- other nodes' calls -------------------------------------------------------------------------

    def scan(self) -> None:
        """Take over calls whose holder is gone or draining, on ranges our pool owns; drain."""
        now = time.monotonic()
        if now - self.last_scan < SCAN_S:
            return
        self.last_scan = now
        try:
            members = self.kv.get_prefix(Keys.MEMBERS).entries
            drain = self.kv.get(Keys.drain(self.config.pool, self.config.name))
            parked = self.table.all_parked()
        except StoreError as exc:
            log.debug("takeover scan skipped: %s", exc)
            return
        view = self.view
        view.draining = drain is not None and self.decoder.decode(RecordKind.DRAIN, drain, parse_stamp) is not None
        if view.refresh_owners():
            view.last_refresh = 0.0  # ownership moved: recompute our ranges now
        live = {m.node_id: m.draining for ms in parse_members(members, self.decoder).values() for m in ms}
        revisions = {key[len(Keys.MEMBERS) :]: entry.mod_revision for key, entry in members.items()}
        view.live_nodes = live
        if view.draining or not self.is_valid():
            return
        self._settle_unsure(parked)
        owned = {r.name for r in view.ranges}
        for held in parked:
            call = held.call
            if self.me.holds(call.holder) or call.range not in owned:
                continue
            if not self._take_over_from(held, live, revisions):
                return

    def _settle_unsure(self, parked: list[Held]) -> None:
        """Claims of other nodes' calls whose outcome was unknown: applied -> take the call over."""
        if not self.unsure:
            return
        by_orbit = {h.call.orbit: h for h in parked}
        for orbit, write_id in list(self.unsure.items()):
            del self.unsure[orbit]
            held = by_orbit.get(orbit)
            if held is not None and held.call.write_id == write_id:
                with self.calls.lock:
                    self.calls.held[orbit] = held
                self.take_over(held)  # ours, but no worker was asked to INVITE the caller

    @staticmethod
    def _member_key(call: ParkedCall, member: str | None, revisions: dict[str, int]) -> tuple[str, int]:
        """The old holder's member key and its revision as read (0: absent) for the claim's compare."""
        if member is not None:
            pool, _, node = member.partition("/")
            return Keys.member(pool, node), revisions.get(member, 0)
        return Keys.member(call.holder.pool or call.pool, call.holder.node), 0

    def _take_over_from(self, held: Held, live: dict[str, bool], revisions: dict[str, int]) -> bool:
        """Take over one call of another node if it is gone or draining; False: stop the scan."""
        call = held.call
        member = call.holder.member_id(live)
        if member is not None and (
            not live[member] or call.state != CallState.PARKED or not call.dialog.supports_replaces
        ):
            # alive and not draining: it keeps its calls. Alive and draining: only parked calls
            # move; a call ringing back or being retrieved finishes there, and a caller without
            # Replaces stays until it ends (it cannot be moved, and is not lost)
            return True
        holder_member = self._member_key(call, member, revisions)
        if not call.dialog.supports_replaces:
            self._lose_orphan(held, "caller without Replaces support", holder_member)
            return True
        target = self.workers.pick(need=1, reserve=True)
        if target is None:
            log.warning("cannot take over orbit %s: no free worker slot", call.orbit)
            return False
        try:
            claimed = self.table.take_over(
                held,
                self.me.holder(target.index, target.sip(self.config.host)),
                holder_member=holder_member,
                timeout_s=self.view.settings.call_pickup_timeout_s,
            )
        except Unresolved as exc:
            self.workers.release(target)
            self.unsure[call.orbit] = exc.call.write_id  # settled by the next scan
            log.info("orbit %s: takeover claim outcome unknown: %s", call.orbit, exc)
            return True
        except (LostRace, Fenced, StoreError) as exc:
            self.workers.release(target)
            log.info("orbit %s not taken over here: %s", call.orbit, exc)
            return True
        why = "draining" if member is not None else "gone"
        log.warning(
            "taking over orbit %s from %s (%s) on worker %d", call.orbit, call.holder.node_id, why, target.index
        )
        with self.calls.lock:
            self.calls.held[call.orbit] = claimed
        self._send(target, call)
        return True

    def _lose_orphan(self, held: Held, reason: str, holder_member: tuple[str, int]) -> None:
        """Record an orphan we cannot take over as lost: claim it first, so exactly one node does."""
        handles = self.workers.handles
        me = self.me.holder(0, handles[0].sip(self.config.host) if handles else "")
        try:
            claimed = self.table.take_over(
                held, me, holder_member=holder_member, timeout_s=self.view.settings.call_pickup_timeout_s
            )
        except Unresolved as exc:
            self.unsure[held.call.orbit] = exc.call.write_id  # settled (and lost) by the next scan
            return
        except (LostRace, Fenced, StoreError):
            return
        with self.calls.lock:
            self.calls.held[claimed.call.orbit] = claimed
        self.calls.lose(claimed, reason)
