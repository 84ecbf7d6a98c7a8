"""Orbit-scan limiter: per-source token buckets charged only by misses, in bounded memory.

A retrieval of an orbit where nothing is parked (or with a stale park id) is a *miss*; each
miss takes one token from the source's bucket (``burst`` tokens, refilled at ``per_minute``
tokens a minute). A source with less than one token is refused every retrieval until a
token has grown back. Hits cost nothing, so people retrieving their calls are never
charged, and one mistyped orbit (one token) never blocks anyone.

Sources are keyed by address; IPv6 sources by their /64 network (:func:`source_key`), since
one host normally owns a whole /64 and could otherwise scan from 2**64 fresh buckets.

Memory: at most ``max_sources`` buckets (about 150 bytes each). Beyond that the least recently
charged source is forgotten in O(1): it has had the longest time to refill, and forgetting
it only gives it its burst back early (an attacker needs ``max_sources`` addresses of its own
to do that, and each address is itself limited).
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from callpark.errors import ValidationError


@dataclass(frozen=True)
class ScanLimit:
    """How many misses a source may make: ``burst`` at once, ``per_minute`` sustained."""

    burst: int = 10
    per_minute: float = 6.0
    max_sources: int = 10_000

    def validate(self) -> ScanLimit:
        if not 1 <= self.burst <= 10_000:
            raise ValidationError("orbit-scan", f"orbit scan burst must be 1 to 10000, not {self.burst}")
        if not 0.01 <= self.per_minute <= 60_000:
            raise ValidationError(
                "orbit-scan", f"orbit scan rate must be 0.01 to 60000 per minute, not {self.per_minute}"
            )
        if not 1 <= self.max_sources <= 10_000_000:
            raise ValidationError("orbit-scan", f"orbit scan max sources must be 1 to 10000000, not {self.max_sources}")
        return self


IPV6_PREFIX = 64


def source_key(source: str) -> str:
    """The bucket of ``source``: an IPv4 address as is (also IPv4-mapped IPv6), an IPv6 address's
    /64 network, anything else (not an address) unchanged."""
    try:
        ip = ipaddress.ip_address(source)
    except ValueError:
        return source
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


class ScanLimiter:
    """Thread-safe token buckets keyed by source address."""

    def __init__(self, limit: ScanLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit.validate()
        self._clock = clock
        self._rate = limit.per_minute / 60.0  # tokens per second
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # source -> (tokens, stamp)
        self._lock = threading.Lock()

    def _tokens(self, source: str, now: float) -> float:
        entry = self._buckets.get(source)
        if entry is None:
            return float(self.limit.burst)
        tokens, stamp = entry
        return min(float(self.limit.burst), tokens + max(0.0, now - stamp) * self._rate)

    def retry_after(self, source: str) -> int:
        """0 when ``source`` may retrieve now, else whole seconds until its next token."""
        source = source_key(source)
        with self._lock:
            tokens = self._tokens(source, self._clock())
        if tokens >= 1.0:
            return 0
        return max(1, math.ceil((1.0 - tokens) / self._rate))

    def miss(self, source: str) -> None:
        """Charge ``source`` one token for retrieving an orbit where nothing is parked."""
        source = source_key(source)
        with self._lock:
            now = self._clock()
            tokens = max(0.0, self._tokens(source, now) - 1.0)
            self._buckets[source] = (tokens, now)
            self._buckets.move_to_end(source)
            while len(self._buckets) > self.limit.max_sources:
                self._buckets.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)


__all__ = ["IPV6_PREFIX", "ScanLimit", "ScanLimiter", "source_key"]
