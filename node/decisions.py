"""Park and retrieve decisions: a worker's request and the node's state in, a reply out.

:class:`Decisions` turns a ``park`` or ``retrieve`` request (see :mod:`~callpark.node.protocol`)
into a :class:`Reply`: answer, connect, redirect or reject with code, reason and warning,
plus the result the caller counts. Allocating an orbit or claiming a call for retrieval
writes etcd (through :class:`~callpark.store.parking.ParkTable`) and records the call in
:class:`~callpark.node.calls.HeldCalls`; nothing here speaks SIP or sends a message.

Locks: ``alloc_lock`` serialises orbit allocations (see its comment); a retrieval claim
holds ``HeldCalls.lock`` across its transaction. The two are never held together.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from callpark.errors import StoreError
from callpark.model.orbits import OrbitRange
from callpark.model.settings import CpsSettings
from callpark.node.calls import HeldCalls
from callpark.node.context import NodeContext, NodePart
from callpark.node.protocol import REASON_FENCED, REASON_STATE_UNAVAILABLE, Message
from callpark.node.workers import WorkerHandle
from callpark.peers import host_of, is_ip
from callpark.ratelimit import ScanLimiter
from callpark.sip.message import in_domains
from callpark.store.parking import (
    Fenced,
    Held,
    LostRace,
    NoFreeOrbit,
    OrbitTaken,
    OwnershipChanged,
    Unapplied,
    Unresolved,
)
from callpark.store.records import CallState, Dialog, ParkKind

PARKS = "parks"  # the NodeMetrics counter a reply's result is counted in
RETRIEVALS = "retrievals"


FORCED_REFRESH_S = 1.0  # at most one configuration read per second for orbits of unknown ranges


@dataclass(frozen=True)
class Reply:
    """What a worker does with the INVITE it asked about: the ``reply`` message, minus ``req``.

    ``counter``/``result``: the metric (``parks`` or ``retrievals``) and result label to
    count, or None when the outcome is counted later (a park is counted once answered).
    """

    action: str  # answer | connect | redirect | reject
    fields: dict[str, Any] = field(default_factory=dict)
    counter: str | None = None
    result: str | None = None

    @property
    def code(self) -> int | None:
        """The SIP status of a reject, None otherwise."""
        code = self.fields.get("code")
        return int(code) if code is not None else None


REASON_FOREIGN_PARKER = "Forbidden: Referred-By outside the SIP domains"


def reject(counter: str, result: str, code: int, reason: str, warning: str, **extra: Any) -> Reply:
    return Reply("reject", {"code": code, "reason": reason, "warning": warning, **extra}, counter, result)


def redirect(counter: str, result: str, contact: str) -> Reply:
    return Reply("redirect", {"contact": contact}, counter, result)


class NodeFacts(Protocol):
    """What the decisions read of the node's view (:class:`~callpark.node.views.ClusterView`)."""

    ranges: list[OrbitRange]
    all_ranges: list[OrbitRange]
    settings: CpsSettings
    draining: bool
    live_nodes: dict[str, bool]  # pool/node -> draining

    def owner_elsewhere(self, orbit: str | None) -> str | None: ...

    def refresh_config(self, force: bool = False) -> None: ...

    def home_music(self, range_name: str) -> str | None: ...

    def announcement(self, orbit: str, range_name: str) -> str | None: ...


class Decisions(NodePart):
    """Decides parks and retrievals for the workers of one node (thread-safe).

    ``pick_worker(need, exclude)`` is :meth:`~callpark.node.workers.WorkerPool.pick`.
    """

    def __init__(
        self,
        ctx: NodeContext,
        *,
        calls: HeldCalls,
        facts: NodeFacts,
        pick_worker: Callable[[int, int | None], WorkerHandle | None],
        scan: ScanLimiter,
    ) -> None:
        super().__init__(ctx)
        self.calls = calls
        self.facts = facts
        self.pick_worker = pick_worker
        self.scan = scan
        # One allocation at a time: concurrent parks would all try the same least recently
        # freed orbit, and every loser pays a failed txn plus a liveness read, then retries.
        self.alloc_lock = threading.Lock()
        self._forced_refresh_at = -FORCED_REFRESH_S  # monotonic time of the last unknown-orbit refresh

    # -- park -------------------------------------------------------------------------------------

    def park(self, w: WorkerHandle, msg: Message, *, retried: bool = False) -> Reply:
        """Park the caller of ``msg`` (arrived on worker ``w``) on an orbit, or say why not."""
        refused = self._park_refusal(w, msg)
        if refused is not None:
            return refused
        target = msg.get("target") or "park"
        if target != "park":
            self._learn_new_range(str(target))
        elsewhere = self.facts.owner_elsewhere(None if target == "park" else str(target))
        if self.kv.unreachable():  # found out while looking for the owner
            return reject(PARKS, "etcd-unreachable", 503, REASON_STATE_UNAVAILABLE, "etcd unreachable: owners unknown")
        if elsewhere is not None:
            return redirect(PARKS, "redirected-to-owner", f"sip:{target}@{elsewhere}")
        return self._allocate(w, msg, str(target), retried=retried)

    def _park_refusal(self, w: WorkerHandle, msg: Message) -> Reply | None:
        """Why this node parks nothing now (fenced, etcd, draining, full), or None."""
        if not self.is_valid():
            return reject(PARKS, "fenced", 503, REASON_FENCED, "park node fenced: etcd lease not renewed")
        if self.kv.unreachable():
            # Fail fast so the edge tries the next node or the backup pool at once, instead of
            # every park waiting out etcd time-outs until the lease runs out (found by the chaos
            # suite: 10 s to park again with the primary pool cut from etcd).
            return reject(
                PARKS, "etcd-unreachable", 503, REASON_STATE_UNAVAILABLE, "etcd unreachable: last request failed"
            )
        if self.facts.draining:
            return reject(PARKS, "draining", 503, "Park node draining", "35012 Parking server is in draining mode")
        referred_by = msg.get("referred_by")
        if referred_by and not in_domains(str(referred_by), self.config.allowed_domains):
            # the parker (orbit MESSAGE, ringbacks) would be dialled outside the deployment
            return reject(
                PARKS,
                "foreign-parker",
                403,
                REASON_FOREIGN_PARKER,
                f"Referred-By {str(referred_by)[:200]} is outside the SIP domains"
                f" {', '.join(sorted(self.config.allowed_domains))}",
            )
        if int(msg.get("free", w.free_slots)) < 1:
            other = self.pick_worker(1, w.index)
            if other is None:
                return reject(PARKS, "no-slot", 503, "No free call slot", "no free call slot on this park node")
            target = msg.get("target", "park")
            return redirect(PARKS, "redirected", f"sip:{target}@{other.sip(self.config.host)}")
        return None

    def _learn_new_range(self, orbit: str) -> None:
        """A directed park on an orbit of no range we know: read the configuration now (a range
        added a moment ago is routed by the edge within a second; our periodic refresh is every
        2 s), at most once per :data:`FORCED_REFRESH_S` so unknown orbits cannot flood etcd."""
        if any(r.contains(orbit) for r in self.facts.all_ranges):
            return
        now = time.monotonic()
        if now - self._forced_refresh_at < FORCED_REFRESH_S:
            return
        self._forced_refresh_at = now
        with contextlib.suppress(StoreError):  # the park then fails as it would have
            self.facts.refresh_config(force=True)

    def _allocate(self, w: WorkerHandle, msg: Message, target: str, *, retried: bool) -> Reply:
        referred_by = msg.get("referred_by")
        kind = ParkKind.DIRECTED if target != "park" else (ParkKind.BLIND if referred_by else ParkKind.ATTENDED)
        dialog = Dialog(
            call_id=str(msg.get("call_id", "")),
            local_tag=str(msg.get("local_tag", "")),  # the worker's 180 fixed it
            remote_tag=str(msg.get("remote_tag", "")),
            remote_contact=str(msg.get("contact", "")),
            remote_uri=str(msg.get("from_uri", "")),
            supports_replaces=bool(msg.get("supports_replaces", False)),
        )
        try:
            with self.alloc_lock:
                if not self.is_valid() or self.kv.unreachable():
                    # went bad while this park queued behind another
                    return reject(
                        PARKS, "etcd-unreachable", 503, REASON_STATE_UNAVAILABLE, "etcd unreachable while queued"
                    )
                held = self.table.allocate(
                    self.facts.ranges,
                    target=None if target == "park" else target,
                    holder=self.me.holder(w.index, w.sip(self.config.host)),
                    dialog=dialog,
                    kind=kind,
                    caller_uri=str(msg.get("from_uri", "")),
                    parker_uri=referred_by if kind != ParkKind.ATTENDED else str(msg.get("from_uri", "")),
                    timeout_s=self.facts.settings.call_pickup_timeout_s,
                )
        except OwnershipChanged:
            if retried:
                return reject(PARKS, "ownership-changed", 503, "Ownership changing", "range ownership is moving; retry")
            self.facts.refresh_config(force=True)
            return self.park(w, msg, retried=True)
        except NoFreeOrbit as exc:
            return reject(PARKS, "no-orbit", 486, "No more available orbits", f"35002 No more available orbits: {exc}")
        except OrbitTaken as exc:
            return reject(PARKS, "orbit-taken", 486, "Orbit not available", f"35006 Cannot park: {exc}")
        except Fenced:
            return reject(PARKS, "fenced", 503, REASON_FENCED, "park node fenced: etcd lease lost")
        except StoreError as exc:
            if isinstance(exc, Unresolved):
                self.calls.ghost(exc.call)  # freed once etcd answers, if it applied
            return reject(PARKS, "etcd-error", 503, REASON_STATE_UNAVAILABLE, f"etcd unavailable: {exc}")
        with self.calls.lock:
            self.calls.held[held.call.orbit] = held
        self.calls.note_start(w.index, str(msg["call"]), held.call.orbit, float(msg.get("age_s", 0.0)))
        fields = {
            "orbit": held.call.orbit,
            "park_id": held.call.park_id,
            "retrieve_uri": self.retrieve_uri(held.call.orbit, held.call.park_id, w),
            "music": self.facts.settings.enable_music_on_hold,
            "music_path": self.facts.home_music(held.call.range),
        }
        if kind == ParkKind.ATTENDED:  # the parker is on this call: it hears where the call goes
            fields["announce"] = self.facts.announcement(held.call.orbit, held.call.range)
        return Reply("answer", fields)

    # -- retrieve ---------------------------------------------------------------------------------

    def retrieve(self, w: WorkerHandle, msg: Message) -> Reply:
        """Connect the retriever of ``msg`` to the call parked on its orbit, or say why not."""
        orbit = str(msg["orbit"])
        if not self.is_valid():
            return reject(RETRIEVALS, "fenced", 503, REASON_FENCED, "park node fenced: etcd lease not renewed")
        if self.kv.unreachable():
            return reject(
                RETRIEVALS, "etcd-unreachable", 503, REASON_STATE_UNAVAILABLE, "etcd unreachable: last request failed"
            )
        source = self.source(msg)
        wait = self.scan.retry_after(source)
        if wait:
            return reject(
                RETRIEVALS,
                "scan-limited",
                480,
                "Too Many Unknown Orbits",
                f"{source} dialled too many orbits where nothing is parked; retry in {wait}s",
                retry_after=wait,
            )
        try:
            held = self.table.get(orbit)
        except StoreError as exc:
            return reject(RETRIEVALS, "etcd-error", 503, REASON_STATE_UNAVAILABLE, f"etcd unavailable: {exc}")
        if held is None:
            # a miss: nothing parked here (a directed park costs a token too, see ratelimit.py)
            self.scan.miss(source)
            if msg.get("referred_by"):
                self._learn_new_range(orbit)  # a transfer to an orbit of a range added a moment ago
            if msg.get("referred_by") and any(r.contains(orbit) for r in self.facts.all_ranges):
                # a directed park (a transfer to a free orbit); sent on if another pool owns it
                return self.park(w, {**msg, "target": orbit})
            return reject(
                RETRIEVALS, "not-found", 404, "Orbit not found", f"35000 Orbit not found: nothing is parked on {orbit}"
            )
        if msg.get("referred_by"):
            # a transfer onto an occupied orbit is a second park, not a retrieval (Lync 35006)
            return reject(PARKS, "double-park", 486, "Orbit not available", f"35006 Double park: {orbit} is occupied")
        wanted = msg.get("park_id")
        if wanted and wanted != held.call.park_id:
            self.scan.miss(source)
            return reject(
                RETRIEVALS,
                "stale-park-id",
                404,
                "Parked call gone",
                "35010 Could not safe retrieve: another call is on the orbit",
            )
        return self._connect(w, msg, held, wanted)

    def _connect(self, w: WorkerHandle, msg: Message, held: Held, wanted: Any) -> Reply:
        """The call is there: redirect to its holder, or claim it for this worker's retriever."""
        call, orbit = held.call, held.call.orbit
        mine = self.me.holds(call.holder)
        if not mine and call.holder.member_id(self.facts.live_nodes) is None:
            return reject(
                RETRIEVALS,
                "holder-gone",
                480,
                "Parked call being taken over",
                f"holder {call.holder.node_id} is gone; retry in a moment",
            )
        if not mine or call.holder.worker != w.index:
            safe = f";park-id={wanted}" if wanted else ""  # the holder checks it again
            return redirect(RETRIEVALS, "redirected", f"sip:{orbit}@{call.holder.sip}{safe}")
        try:
            self.calls.claim(held, CallState.RETRIEVING)
        except (Unapplied, Unresolved) as exc:
            return reject(RETRIEVALS, "etcd-error", 503, REASON_STATE_UNAVAILABLE, f"etcd unavailable: {exc}")
        except (LostRace, Fenced, StoreError) as exc:
            return reject(
                RETRIEVALS, "lost-race", 486, "Orbit busy", f"Orbit {orbit} is being retrieved or rung back ({exc})"
            )
        self.calls.note_start(w.index, str(msg["call"]), orbit, float(msg.get("age_s", 0.0)))
        replaces = bool(call.dialog.supports_replaces and msg.get("supports_replaces"))
        return Reply("connect", {"orbit": orbit, "replaces": replaces}, RETRIEVALS, "ok")

    # -- addresses --------------------------------------------------------------------------------

    def source(self, msg: Message) -> str:
        """The address a request really came from: the edge's X-Callpark-Source, else the peer.

        The header is believed only from the edge's own address (``--edge``, its host resolved at start);
        the edge removes any copy arriving from outside before adding its own.
        """
        peer = str(msg.get("peer") or "")
        origin = msg.get("origin")
        if origin and self.config.is_edge(peer):
            candidate = str(origin).strip()
            if is_ip(candidate):
                return candidate
        return host_of(peer) if peer else "unknown"

    def retrieve_uri(self, orbit: str, park_id: str, w: WorkerHandle) -> str:
        """Lync's safe-retrieve URI: the orbit with its park id, addressed like the parker dials."""
        host = host_of(self.config.edge) if self.config.edge else w.sip(self.config.host)
        user = orbit.replace("*", "%2A").replace("#", "%23")
        return f"sip:{user}@{host};park-id={park_id}"
