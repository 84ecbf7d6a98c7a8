"""The headline figures of a run, one JSON key each (issue 16), with the floors they are read against.

A figure the run did not measure is ``None`` and ``figures_missing`` says why, so a reader
never mistakes a missing scenario for a good number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

FIGURE_KEYS = (
    "park_p50_ms",
    "park_p99_ms",
    "park_floor_p50_ms",
    "park_ratio_to_floor",
    "retrieve_p50_ms",
    "parks_per_s",
    "pss_mb_per_call",
    "cpu_pct_per_call",
    "parked_capacity",
    "takeover_p99_s",
    "snapshot_s_at_50k",
    "failover_10k_s",
    "wan_park_p50_ms",
    "wan_rto_s",
    # floors measured in the same run
    "etcd_put_floor_p50_ms",
    "sip_floor_p50_ms",
    "park_ratio_to_sip_floor",
    "park_ratio_to_etcd_floor",
)

NOT_BUILT = {
    "park_floor_p50_ms": "needs a node on the in-memory store (not built yet)",
    "park_ratio_to_floor": "needs park_floor_p50_ms",
    "takeover_p99_s": "needs the takeover drill scenario (not built yet)",
    "failover_10k_s": "needs a pool failover with 10,000 real holders (not built yet)",
    "wan_park_p50_ms": "needs the WAN scenario (not built yet)",
    "wan_rto_s": "needs the WAN scenario (not built yet)",
}


def _get(data: Mapping[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def figures(result: Mapping[str, Any]) -> tuple[dict[str, float | None], dict[str, str]]:
    """``(figures, why_missing)`` from a run's result."""
    latency = result.get("latency") or {}
    top = latency[max(latency, key=int)] if latency else {}
    per_call = _get(result, "cost", "per_call") or [{}]
    capacity = _get(result, "cost", "capacity") or {}
    scale = result.get("scale") or {}
    out: dict[str, float | None] = dict.fromkeys(FIGURE_KEYS)
    out["park_p50_ms"] = _finite(_get(top, "park_refer_to_parker_told", "p50_ms"))
    out["park_p99_ms"] = _finite(_get(top, "park_refer_to_parker_told", "p99_ms"))
    out["retrieve_p50_ms"] = _finite(_get(top, "retrieve_invite_to_connected", "p50_ms"))
    out["parks_per_s"] = _finite(_get(result, "throughput", "parks_per_s"))
    out["pss_mb_per_call"] = _finite(per_call[-1].get("amortised_busy_pss_mb_per_call"))
    out["cpu_pct_per_call"] = _finite(per_call[-1].get("amortised_busy_cpu_pct_per_call"))
    caps = [c for c in (capacity.get("by_cpu"), capacity.get("by_worker_cap")) if isinstance(c, int)]
    out["parked_capacity"] = float(min(caps)) if caps else None
    if scale.get("records") == 50_000:
        out["snapshot_s_at_50k"] = _finite(_get(scale, "with_records", "controller_snapshot_s"))
    out["etcd_put_floor_p50_ms"] = _finite(_get(result, "floors", "etcd_guarded_put", "p50_ms"))
    out["sip_floor_p50_ms"] = _finite(_get(result, "harness", "phone_to_phone_setup", "p50_ms"))
    out["park_ratio_to_sip_floor"] = _ratio(out["park_p50_ms"], out["sip_floor_p50_ms"])
    out["park_ratio_to_etcd_floor"] = _ratio(out["park_p50_ms"], out["etcd_put_floor_p50_ms"])
    missing = {
        k: NOT_BUILT.get(k, "not measured in this run (see problems, or a phase was skipped)")
        for k, v in out.items()
        if v is None
    }
    if scale.get("records") not in (None, 50_000) and "snapshot_s_at_50k" in missing:
        missing["snapshot_s_at_50k"] = f"this run wrote {scale.get('records')} records, not 50,000 (see scale)"
    return out, missing
