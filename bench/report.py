"""The result file (JSON) and the printed table."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

TARGETS: dict[str, Any] = {
    "park_refer_to_parked_with_orbit_p50_ms": 10.0,
    "park_refer_to_parked_with_orbit_p99_ms": 50.0,
    "retrieve_invite_to_connected_p50_ms": 15.0,
    "cpu_pct_of_core_per_parked_call": 0.1,
    "pss_mb_per_parked_call": 3.0,
    "parked_calls_per_2_core_node": 500,
}


def write(result: Mapping[str, Any], out_dir: Path, stamp: str) -> tuple[Path, Path]:
    """Write ``<stamp>.json`` and ``latest.json`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, sort_keys=False, default=str) + "\n"
    path = out_dir / f"{stamp}.json"
    path.write_text(text)
    latest = out_dir / "latest.json"
    latest.write_text(text)
    return path, latest


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _dist(summary: Mapping[str, Any] | None) -> str:
    """``p50 / p99 / max (n)`` of a latency summary."""
    if not summary or not summary.get("n"):
        return "-"
    p50, p99, top = (_num(summary.get(k)) for k in ("p50_ms", "p99_ms", "max_ms"))
    return f"{p50} / {p99} / {top} ({summary['n']})"


def _server(summary: Mapping[str, Any] | None) -> str:
    if not summary or not summary.get("n"):
        return "-"
    p50, p99, mean = (_num(summary.get(k)) for k in ("p50_ms", "p99_ms", "mean_ms"))
    return f"{p50} / {p99} / mean {mean} ({summary['n']})"


def _verdict(value: float | None, limit: float) -> str:
    if value is None or math.isnan(value):
        return ""
    return "ok" if value <= limit else "MISS"


_LATENCY_ROWS = (
    ("park REFER -> parker told orbit [target]", "park_refer_to_parker_told", "p50<=10 p99<=50"),
    ("park REFER -> caller answered (200+ACK)", "park_refer_to_caller_answered", ""),
    ("  caller UA: REFER -> its INVITE", "park_caller_refer_to_invite", ""),
    ("  node: park INVITE -> answered", "park_invite_to_answered", ""),
    ("park bench cmd -> parker told (+harness)", "park_command_to_parker_told", ""),
    ("retrieve INVITE -> answered by node", "retrieve_invite_to_answered", ""),
    ("retrieve INVITE -> connected to caller [target]", "retrieve_invite_to_connected", "p50<=15"),
    ("retrieve bench cmd -> connected (+harness)", "retrieve_command_to_connected", ""),
)
_SERVER_ROWS = (
    ("callpark_park_latency_seconds", "server histogram: park (p50/p99/mean)"),
    ("callpark_retrieve_latency_seconds", "server histogram: retrieve"),
)
_HARNESS_ROWS = (
    ("ping_rtt", "command round trip (bench's event-driven waits)"),
    ("ping_rtt_stock_harness", "command round trip (tests' polling Phone.command)"),
    ("command_to_invite", "bench writes 'call' -> phone sends INVITE"),
    ("event_pipe_delay", "phone event ts -> bench receives it"),
    ("phone_to_phone_setup", "phone->phone INVITE -> CONFIRMED (no node)"),
)
_LABEL_WIDTH = 44


def _header_lines(result: Mapping[str, Any]) -> list[str]:
    meta = result.get("meta", {})
    return [
        f"callpark bench {meta.get('started', '')}  commit {meta.get('commit', '?')}  "
        f"{meta.get('cpus', '?')} CPUs  load at start {meta.get('load_start', '?')}  "
        f"node workers {result.get('topology', {}).get('workers', '?')}  took {_num(result.get('duration_s'))} s"
    ]


def _latency_table(latency: Mapping[str, Any], levels: list[str]) -> list[str]:
    """One row per latency (phone-side, then the server's histograms), one column per level."""
    width = _LABEL_WIDTH
    lines = [
        "Latency, ms, phone-side timestamps: p50 / p99 / max (n)",
        f"  {'':{width}}" + "".join(f"{f'{lv} parked in background':>34}" for lv in levels) + "   target",
    ]
    for label, key, target in _LATENCY_ROWS:
        cells = [f"{_dist(latency[lv].get(key)):>34}" for lv in levels]
        lines.append(f"  {label:{width}}" + "".join(cells) + f"   {target}")
    for name, label in _SERVER_ROWS:
        cells = [f"{_server(latency[lv].get('server', {}).get(name)):>34}" for lv in levels]
        lines.append(f"  {label:{width}}" + "".join(cells))
    return lines


def _latency_lines(latency: Mapping[str, Any], result: Mapping[str, Any]) -> list[str]:
    """The latency table, the node's counters per level and the verdicts against the targets."""
    levels = list(latency)
    lines = _latency_table(latency, levels)
    for lv in levels:
        data = latency[lv]
        if data.get("errors"):
            lines.append(f"  errors with {lv} parked: {data['errors']}")
        lines.append(
            f"  node counters with {lv} parked: parks {data.get('node_parks_total')}, "
            f"retrievals {data.get('node_retrievals_total')}; worker slots lost so far: "
            f"{(data.get('slots_after') or {}).get('lost_slots', '?')}"
        )
    verdicts = []
    for lv in levels:
        park = latency[lv].get("park_refer_to_parker_told") or {}
        ret = latency[lv].get("retrieve_invite_to_connected") or {}
        verdicts.append(
            f"{lv} parked: park p50 {_verdict(park.get('p50_ms'), 10.0)}, "
            f"park p99 {_verdict(park.get('p99_ms'), 50.0)}, retrieve p50 {_verdict(ret.get('p50_ms'), 15.0)}"
        )
    lines.append("  vs targets: " + "; ".join(verdicts))
    return lines


def _harness_lines(harness: Mapping[str, Any], result: Mapping[str, Any]) -> list[str]:
    lines = ["Harness overhead, ms: p50 / p99 / max (n)"]
    lines.extend(f"  {label:52}{_dist(harness.get(key)):>34}" for key, label in _HARNESS_ROWS)
    return lines


def _throughput_lines(tp: Mapping[str, Any], result: Mapping[str, Any]) -> list[str]:
    lines = [
        f"Sustained parks: {_num(tp.get('parks_per_s'))} parks/s over {_num(tp.get('seconds'))} s "
        f"({tp.get('completions')} completed, {tp.get('error_count')} errors, {tp.get('lanes')} lanes "
        f"offering at most {tp.get('offered_cap_per_s')}/s, "
        f"{result.get('throughput_background', '?')} parked in background); "
        f"INVITE->answered {_dist(tp.get('invite_to_answered'))}; "
        f"records left behind {tp.get('records_left_behind')}",
    ]
    if tp.get("errors"):
        lines.append(f"  errors: {tp['errors']}")
    server = tp.get("server", {})
    txn = (server.get("callpark_etcd_request_seconds{op=txn}") or {}).get("n", 0)
    per_park = f"{txn / tp['completions']:.1f}" if tp.get("completions") else "-"
    lines.append(
        f"  CPU % of a core during the run: {tp.get('cpu_pct_of_core_during_run')}; "
        f"server park histogram {_server(server.get('callpark_park_latency_seconds'))}; "
        f"etcd txns per park {per_park}"
    )
    lines.append(
        f"  node parks_total by result: {tp.get('node_parks_total')}; ended: {tp.get('node_ended_total')}; "
        f"worker slots lost after the run: {(tp.get('slots_after') or {}).get('lost_slots', '?')}"
    )
    return lines


def _cost_level_line(lv: Mapping[str, Any]) -> str:
    g = lv["groups"]
    return (
        f"  {lv['parked']:>7}{_num(lv['node_cpu_pct_of_core'], 2):>16}{_num(lv['node_pss_mb']):>13}"
        f"{_num(lv.get('node_uss_mb')):>9}"
        f"{g['busy_workers']['processes']:>11}{_num(g['phones']['cpu_pct_of_core'], 1):>14}"
        f"{_num(g.get('etcd', {}).get('cpu_pct_of_core'), 1):>12}{_num(lv['load_average'][0], 2):>7}"
    )


def _cost_per_call_line(row: Mapping[str, Any]) -> str:
    return (
        f"  {row['parked']:>7}{_num(row.get('marginal_cpu_pct_per_call'), 3):>16}"
        f"{_num(row.get('marginal_pss_mb_per_call'), 2):>14}"
        f"{_num(row.get('amortised_busy_cpu_pct_per_call'), 3):>14}"
        f"{_num(row.get('amortised_busy_pss_mb_per_call'), 2):>15}"
        f"{_num(row.get('amortised_busy_uss_mb_per_call'), 2):>14}"
        f"{_num(row.get('pss_mb_per_busy_worker'), 1):>14}"
        f"   {_verdict(row.get('amortised_busy_cpu_pct_per_call'), 0.1)}/"
        f"{_verdict(row.get('amortised_busy_pss_mb_per_call'), 3.0)}"
    )


def _cost_lines(cost: Mapping[str, Any], result: Mapping[str, Any]) -> list[str]:
    lines = [
        f"Cost of the node's processes (supervisor + workers; phones and etcd shown apart), "
        f"window {cost['levels'][0]['window_s'] if cost.get('levels') else '?'} s",
        f"  {'parked':>7}{'node CPU %core':>16}{'node PSS MB':>13}{'USS MB':>9}{'busy wkrs':>11}"
        f"{'phones CPU %':>14}{'etcd CPU %':>12}{'load1':>7}",
    ]
    lines.extend(_cost_level_line(lv) for lv in cost.get("levels", []))
    lines.append(
        f"  {'per call':>7}{'marginal CPU %':>16}{'marg. PSS MB':>14}{'amort. CPU %':>14}"
        f"{'amort. PSS MB':>15}{'amort. USS MB':>14}{'PSS/busy wkr':>14}   target <=0.1 %, <=3 MB"
    )
    lines.extend(_cost_per_call_line(row) for row in cost.get("per_call", []))
    cap = cost.get("capacity")
    if cap:
        lines.append(
            f"  capacity of a 2-core node: by CPU ~{cap.get('by_cpu')} calls, by the --workers cap "
            f"{cap.get('by_worker_cap')} calls (target >= 500)"
        )
    return lines


def _closing_lines(result: Mapping[str, Any]) -> list[str]:
    lines = []
    music = result.get("music")
    if music and music.get("checked"):
        lines.append(f"Music on hold heard by a parked caller: {music.get('music_heard')} (rms {music.get('rms')})")
    problems = result.get("problems")
    if problems:
        lines.extend(["", f"Problems: {problems}"])
    return lines


def _figure_lines(result: Mapping[str, Any]) -> list[str]:
    """One row per headline figure (its JSON key), '-' and the reason when not measured."""
    figures = result.get("figures") or {}
    missing = result.get("figures_missing") or {}
    lines = ["Figures (JSON key: value; ratios are to floors measured in this run)"]
    for key, value in figures.items():
        lines.append(f"  {key:28}{_num(value, 2):>12}" + (f"   ({missing[key]})" if key in missing else ""))
    return lines


def _scale_lines(scale: Mapping[str, Any], result: Mapping[str, Any]) -> list[str]:
    without, with_ = scale.get("without_records") or {}, scale.get("with_records") or {}
    cost = scale.get("node_cost") or {}
    park = (scale.get("latency") or {}).get("park_refer_to_parker_told")
    return [
        f"Scale: {scale.get('records')} parked records written directly in {_num(scale.get('write_s'), 2)} s",
        f"  controller snapshot {_num(without.get('controller_snapshot_s'), 3)} s -> "
        f"{_num(with_.get('controller_snapshot_s'), 3)} s; parked/ read {_num(without.get('read_parked_s'), 3)} s -> "
        f"{_num(with_.get('read_parked_s'), 3)} s",
        f"  node CPU % of a core with them: {_num(cost.get('node_cpu_pct_of_core'), 2)}; "
        f"park REFER -> parker told with them: {_dist(park)}",
    ]


_SECTIONS: tuple[tuple[str, Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]]], ...] = (
    ("latency", _latency_lines),
    ("harness", _harness_lines),
    ("throughput", _throughput_lines),
    ("cost", _cost_lines),
    ("scale", _scale_lines),
)
"""Result keys with a section of their own, in print order; a missing or empty one is left out."""


def render(result: Mapping[str, Any]) -> str:
    """A plain-text table of the main numbers."""
    lines = _header_lines(result)
    if result.get("figures"):
        lines += ["", *_figure_lines(result)]
    for key, section in _SECTIONS:
        part = result.get(key)
        if part:
            lines += ["", *section(part, result)]
    lines += _closing_lines(result)
    return "\n".join(lines)
