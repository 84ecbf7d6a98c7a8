"""The orbit-scan limiter alone, on a fake clock: misses cost, hits do not, memory is bounded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callpark.errors import ValidationError
from callpark.ratelimit import ScanLimit, ScanLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(burst: int = 3, per_minute: float = 6.0, max_sources: int = 100) -> tuple[ScanLimiter, Clock]:
    clock = Clock()
    return ScanLimiter(ScanLimit(burst=burst, per_minute=per_minute, max_sources=max_sources), clock), clock


def test_a_source_is_refused_after_burst_misses_and_only_that_source() -> None:
    scan, _ = limiter(burst=3)
    for _ in range(3):
        assert scan.retry_after("10.0.0.9") == 0
        scan.miss("10.0.0.9")
    assert scan.retry_after("10.0.0.9") == 10  # 6 a minute: one token every 10 s
    assert scan.retry_after("10.0.0.10") == 0


def test_one_mistyped_orbit_never_blocks() -> None:
    scan, _ = limiter(burst=1 + 1)
    scan.miss("10.0.0.9")
    assert scan.retry_after("10.0.0.9") == 0


def test_tokens_grow_back_at_the_configured_rate() -> None:
    scan, clock = limiter(burst=2, per_minute=6.0)
    scan.miss("s")
    scan.miss("s")
    clock.now += 9.0
    assert scan.retry_after("s") == 1
    clock.now += 1.0
    assert scan.retry_after("s") == 0
    scan.miss("s")
    assert scan.retry_after("s") == 10
    clock.now += 3600
    scan.miss("s")
    assert scan.retry_after("s") == 0  # refilled to the burst, never beyond


def test_memory_is_bounded_and_the_least_recently_charged_source_goes_first() -> None:
    scan, clock = limiter(burst=1, max_sources=3)
    for source in ("a", "b", "c", "d"):
        clock.now += 1
        scan.miss(source)
    assert len(scan) == 3
    assert scan.retry_after("a") == 0  # forgotten: full burst again
    assert scan.retry_after("d") > 0


def test_limits_are_validated_with_the_bad_value_named() -> None:
    with pytest.raises(ValidationError, match="burst must be 1 to 10000, not 0"):
        ScanLimit(burst=0).validate()
    with pytest.raises(ValidationError, match=r"not 0\.0"):
        ScanLimit(per_minute=0.0).validate()


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.floats(0, 100)), max_size=200), st.integers(1, 5))
def test_never_more_than_burst_misses_pass_in_a_window_without_refill(
    events: list[tuple[str, float]], burst: int
) -> None:
    """With a negligible refill, a source gets at most ``burst`` allowed attempts that miss."""
    scan, clock = limiter(burst=burst, per_minute=0.01, max_sources=10)
    allowed: dict[str, int] = {}
    for source, step in events:
        clock.now += step / 1000  # 0.1 s at most per step: refill stays below one token
        if scan.retry_after(source) == 0:
            allowed[source] = allowed.get(source, 0) + 1
            scan.miss(source)
    assert all(count <= burst for count in allowed.values())
    assert len(scan) <= 10


def test_an_ipv6_scanner_is_charged_per_64_not_per_address() -> None:
    """One host owns a /64: hopping through its addresses must not give it fresh buckets."""
    scan, _ = limiter(burst=3)
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff:ffff:ffff:ffff"):
        assert scan.retry_after(host) == 0
        scan.miss(host)
    assert scan.retry_after("2001:db8:1:2::abcd") == 10
    assert scan.retry_after("2001:db8:1:3::1") == 0  # the next /64 is someone else
    assert len(scan) == 1


def test_ipv4_mapped_sources_share_the_ipv4_bucket() -> None:
    scan, _ = limiter(burst=1)
    scan.miss("::ffff:10.0.0.9")
    assert scan.retry_after("10.0.0.9") == 10
