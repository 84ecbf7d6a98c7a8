"""Percentiles of samples and of Prometheus histograms (deltas between two scrapes)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, linear between closest ranks."""
    if not sorted_values:
        return math.nan
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass(frozen=True)
class Summary:
    """Distribution of latency samples, in milliseconds."""

    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    min_ms: float

    @classmethod
    def of_seconds(cls, values: Iterable[float]) -> Summary:
        ms = sorted(v * 1000.0 for v in values)
        if not ms:
            nan = math.nan
            return cls(0, nan, nan, nan, nan, nan, nan)
        return cls(
            n=len(ms),
            p50_ms=round(percentile(ms, 0.50), 3),
            p90_ms=round(percentile(ms, 0.90), 3),
            p99_ms=round(percentile(ms, 0.99), 3),
            max_ms=round(ms[-1], 3),
            mean_ms=round(sum(ms) / len(ms), 3),
            min_ms=round(ms[0], 3),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- histograms


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts (upper bound -> count), with sum and count."""

    buckets: tuple[tuple[float, float], ...]
    total: float
    count: float

    def minus(self, earlier: Histogram) -> Histogram:
        before = dict(earlier.buckets)
        return Histogram(
            tuple((le, c - before.get(le, 0.0)) for le, c in self.buckets),
            self.total - earlier.total,
            self.count - earlier.count,
        )

    def quantile(self, q: float) -> float:
        """``histogram_quantile``: linear inside the bucket holding rank ``q * count``."""
        if self.count <= 0:
            return math.nan
        rank = q * self.count
        prev_le, prev_c = 0.0, 0.0
        for le, c in self.buckets:
            if c >= rank:
                if math.isinf(le):
                    return prev_le  # beyond the last finite bound: report that bound
                width = c - prev_c
                return prev_le + (le - prev_le) * ((rank - prev_c) / width if width > 0 else 1.0)
            prev_le, prev_c = le, c
        return prev_le

    def summary(self) -> dict[str, Any]:
        """Count, mean and bucket-interpolated p50/p99 in milliseconds."""
        if self.count <= 0:
            return {"n": 0}
        return {
            "n": int(self.count),
            "mean_ms": round(self.total / self.count * 1000.0, 3),
            "p50_ms": round(self.quantile(0.50) * 1000.0, 3),
            "p99_ms": round(self.quantile(0.99) * 1000.0, 3),
        }


def parse_histograms(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], Histogram]:
    """Every histogram of a /metrics page, by (name, labels without ``le``)."""
    raw: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            slot = raw.setdefault((family.name, labels), {"buckets": [], "sum": 0.0, "count": 0.0})
            if sample.name.endswith("_bucket"):
                slot["buckets"].append((float(sample.labels["le"]), float(sample.value)))
            elif sample.name.endswith("_sum"):
                slot["sum"] = float(sample.value)
            elif sample.name.endswith("_count"):
                slot["count"] = float(sample.value)
    return {key: Histogram(tuple(sorted(v["buckets"])), float(v["sum"]), float(v["count"])) for key, v in raw.items()}


def histogram_deltas(
    before: Mapping[tuple[str, tuple[tuple[str, str], ...]], Histogram],
    after: Mapping[tuple[str, tuple[tuple[str, str], ...]], Histogram],
    names: Iterable[str],
) -> dict[str, dict[str, Any]]:
    """Summaries of what each named histogram recorded between two scrapes (labels joined).

    p50/p99 are interpolated inside the Prometheus buckets (bounds 1, 2.5, 5, 10, 15, 25,
    50 ms, ...), so they are only as fine as those bounds.
    """
    wanted = set(names)
    out: dict[str, dict[str, Any]] = {}
    for key, hist in after.items():
        name, labels = key
        if name not in wanted:
            continue
        earlier = before.get(key)
        delta = hist.minus(earlier) if earlier is not None else hist
        if delta.count <= 0:
            continue
        label = ",".join(f"{k}={v}" for k, v in labels if k not in ("pool", "node"))
        out[f"{name}{{{label}}}" if label else name] = delta.summary()
    return out
