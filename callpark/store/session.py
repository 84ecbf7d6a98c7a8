"""An etcd lease with a local, monotonic self-fencing deadline (etcd's concurrency.Session idea).

A process that holds something through a lease (a node's member key, the controller's
leadership) acts only while :meth:`LeaseSession.is_valid`: the deadline is the *send* time of
the last confirmed grant or keepalive plus the TTL minus a safety margin, so the process stops
before etcd can expire the lease and hand what it held to another process.

The timing rules of both users live here too (:class:`LeaseTimings` for nodes,
:class:`ControllerTimings` for controllers), so a deployment file is checked by the same
code as the processes it starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from callpark.errors import StoreError, ValidationError
from callpark.store.kv import KV

log = logging.getLogger(__name__)

MIN_TTL_S = 3  # etcd's practical minimum lease TTL


@dataclass(frozen=True)
class LeaseHolder:
    """How the timing rules name one kind of lease holder in their messages and rule codes."""

    lease: str  # "lease", "leader lease"
    renewal: str  # what renews it: "keepalives", "controller loops"
    rule: str  # the rule code when two renewals do not fit the TTL
    positive: str  # the message when the holder's intervals are not positive


NODE = LeaseHolder(
    "lease", "keepalives", "timing-keepalive", "keepalive, safety margin and request timeout must be > 0"
)
CONTROLLER = LeaseHolder(
    "leader lease", "controller loops", "timing-loop", "controller loop must be > 0 and grace >= 0 seconds"
)


def check_lease_timings(
    holder: LeaseHolder, ttl_s: int, renew_s: float, safety_s: float, request_timeout_s: float, *, positive: bool
) -> None:
    """The rules every lease holder obeys, in order (raises :class:`ValidationError`).

    The TTL is at least :data:`MIN_TTL_S` (``timing-ttl``); ``positive`` is the holder's own
    "are its intervals positive" check (``timing-positive``); the safety margin covers one etcd
    request (``timing-safety``); two renewals (every ``renew_s``) plus a request plus the safety
    margin fit inside the TTL (``holder.rule``), so one lost renewal never loses the lease.
    """
    if ttl_s < MIN_TTL_S:
        raise ValidationError(
            "timing-ttl", f"{holder.lease} TTL {ttl_s}s is below etcd's practical minimum of {MIN_TTL_S}s"
        )
    if not positive:
        raise ValidationError("timing-positive", holder.positive)
    if safety_s < request_timeout_s:
        raise ValidationError(
            "timing-safety", f"safety margin {safety_s}s must cover one etcd request ({request_timeout_s}s)"
        )
    if 2 * renew_s + request_timeout_s + safety_s > ttl_s:
        raise ValidationError(
            holder.rule,
            f"two {holder.renewal} ({2 * renew_s}s) plus a request ({request_timeout_s}s) plus the "
            f"safety margin ({safety_s}s) must fit inside the {holder.lease} TTL ({ttl_s}s)",
        )


@dataclass(frozen=True)
class LeaseTimings:
    """A node's lease TTL, keepalive interval and safety margin, validated together."""

    ttl_s: int = 10
    keepalive_s: float = 2.0
    safety_s: float = 2.0
    request_timeout_s: float = 1.0

    def validate(self) -> LeaseTimings:
        """Raise :class:`ValidationError` (``timing-*``) unless the timings are safe."""
        positive = self.keepalive_s > 0 and self.safety_s > 0 and self.request_timeout_s > 0
        check_lease_timings(
            NODE, self.ttl_s, self.keepalive_s, self.safety_s, self.request_timeout_s, positive=positive
        )
        return self


@dataclass(frozen=True)
class ControllerTimings:
    """A controller's loop, failover grace and leader lease, validated together.

    The leader renews its lease once per loop, so two loops must fit the TTL (``timing-loop``).
    """

    loop_s: float = 1.0
    grace_s: float = 2.0
    ttl_s: int = 6
    safety_s: float = 1.5
    request_timeout_s: float = 1.0

    def validate(self) -> Self:
        """Raise :class:`ValidationError` (``timing-*``) unless the timings are safe."""
        positive = self.loop_s > 0 and self.grace_s >= 0
        check_lease_timings(
            CONTROLLER, self.ttl_s, self.loop_s, self.safety_s, self.request_timeout_s, positive=positive
        )
        return self


class LeaseSession:
    """One etcd lease, its keepalive and the monotonic deadline until which its holder may act.

    ``lease`` is 0 until a lease is bound. :meth:`confirm` moves the deadline after a grant or
    renewal the holder has checked; :meth:`keep_alive` renews from a thread (nodes), while the
    controller renews from its own loop with :meth:`refresh`.
    """

    def __init__(self, kv: KV, *, ttl_s: int, safety_s: float) -> None:
        self.kv = kv
        self.ttl_s = ttl_s
        self.safety_s = safety_s
        self.lease = 0
        self.deadline = 0.0  # time.monotonic() after which the holder must stop
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the deadline ----------------------------------------------------------------------------

    def is_valid(self) -> bool:
        """True until the self-fencing deadline passes."""
        return time.monotonic() < self.deadline

    def remaining_s(self) -> float:
        """Seconds left before the deadline (0 once passed)."""
        return max(0.0, self.deadline - time.monotonic())

    def confirm(self, sent: float) -> None:
        """A grant or renewal sent at ``sent`` (monotonic) succeeded: move the deadline."""
        with self._lock:
            self.deadline = sent + self.ttl_s - self.safety_s

    def invalidate(self) -> None:
        """Stop acting at once (the lease is gone or given up)."""
        with self._lock:
            self.deadline = 0.0

    # -- the lease -------------------------------------------------------------------------------

    def grant(self) -> int:
        """A new lease, not yet bound (:meth:`bind` it once what it holds is written)."""
        return self.kv.grant_lease(self.ttl_s)

    def bind(self, lease: int, sent: float) -> None:
        """Hold ``lease`` from now on; its grant was sent at ``sent``."""
        with self._lock:
            self.lease = lease
        self.confirm(sent)

    def ensure(self) -> int:
        """The bound lease while etcd still has it, else a newly granted (and bound) one.

        The deadline does not move: the holder confirms once it has written with the lease.
        """
        if not self.lease or self.kv.refresh_lease(self.lease) <= 0:
            self.lease = self.grant()
        return self.lease

    def refresh(self) -> bool:
        """Renew the bound lease once; False when etcd no longer has it (raises StoreError)."""
        return self.kv.refresh_lease(self.lease) > 0

    def revoke(self, lease: int | None = None) -> None:
        """Revoke ``lease`` (default: the bound one, and stop acting); raises StoreError."""
        if lease is None:
            self.invalidate()
            lease = self.lease
        if lease:
            self.kv.revoke_lease(lease)

    # -- the keepalive thread --------------------------------------------------------------------

    def keep_alive(
        self, every_s: float, *, on_renewed: Callable[[float], None], on_expired: Callable[[], None]
    ) -> None:
        """Renew every ``every_s`` from a daemon thread until :meth:`stop`.

        A renewal that fails is retried next time (the deadline keeps running); a renewal that
        finds the lease expired calls ``on_expired`` (re-register), a successful one moves the
        deadline and calls ``on_renewed`` with its round-trip time.
        """
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(every_s, on_renewed, on_expired), name="lease-keepalive", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """Stop the keepalive thread (waiting up to ``timeout_s``) and stop acting."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        self.invalidate()

    def _loop(self, every_s: float, on_renewed: Callable[[float], None], on_expired: Callable[[], None]) -> None:
        while not self._stop.wait(every_s):
            sent = time.monotonic()
            try:
                alive = self.refresh()
            except StoreError as exc:
                log.warning("lease keepalive failed (%.1fs of validity left): %s", self.remaining_s(), exc)
                continue
            if alive:
                self.confirm(sent)
                on_renewed(time.monotonic() - sent)
            else:
                on_expired()
