"""The invariant checker: judges a run from the recorded history and etcd's own history.

Inputs are what really happened, read after the run: the workload's and nemeses'
operations (:mod:`callpark.chaos.history`), every write etcd applied under the
callpark prefix (a watch replay from revision 1, :meth:`EtcdStore.changes`), and the
processes' logs. Each invariant gives a verdict row with the evidence of every
violation; the run passes only when all hold. Like Jepsen, this never proves the
system correct: it reports what it failed to find.

A node process is identified by its holder's ``pool/node`` and incarnation id (random per
start; :func:`incarnation`), not by a lease: ``parked/`` records carry none; member keys
(``members/<pool>/<node>``, bound to the node's lease) carry the same incarnation id, which
is how :func:`moves_from_gone_holders` knows whether a call's old holder was still alive.
An ``error`` operation, and a park, retrieval, ringback or hang-up that failed, fails the
run unless a fault explains it (:func:`errors_explained`, :func:`failures_explained`).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callpark.chaos.history import Op
from callpark.store.etcd import Change
from callpark.store.schema import Keys

OUTCOMES = {"retrieved", "abandoned", "rang-back", "forwarded", "disconnected", "lost"}
BUG_LINE = re.compile(r"\bBUG\b")
ERROR_GRACE_S = 5.0  # a workload error this long after a fault's heal is still the fault's (runs pass theirs)
WORKER_CALLS = 4  # pjsua2's compile-time cap of calls per worker (platform-facts.md)
WORK_OPS = ("park", "retrieve", "abandon", "timeout")
RECONNECT_GRACE_S = 2.0  # a handover racing a caller's hang-up is recorded within this


@dataclass
class Verdict:
    invariant: str
    ok: bool
    checked: int  # how many things the invariant looked at
    violations: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"invariant": self.invariant, "ok": self.ok, "checked": self.checked, "violations": self.violations}


@dataclass
class Report:
    verdicts: list[Verdict]
    numbers: dict[str, float]

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "numbers": self.numbers, "verdicts": [v.to_json() for v in self.verdicts]}


def _json(entry_value: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(entry_value)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _puts(changes: Sequence[Change], prefix: str) -> Iterator[tuple[Change, dict[str, Any]]]:
    """The puts under ``prefix`` whose value is a JSON object, with that object."""
    for ch in changes:
        if ch.kind == "put" and ch.entry.key.startswith(prefix):
            rec = _json(ch.entry.value)
            if rec is not None:
                yield ch, rec


def _verdict(name: str, checked: int, violations: list[str]) -> Verdict:
    return Verdict(
        name, not violations, checked, violations[:20] + ([f"... {len(violations) - 20} more"] * (len(violations) > 20))
    )


def orbit_exclusive(changes: Sequence[Change]) -> Verdict:
    """No orbit ever held by two calls at once: a parked/<orbit> key never switches park id in place."""
    current: dict[str, str] = {}
    bad: list[str] = []
    n = 0
    for ch in changes:
        if not ch.entry.key.startswith(Keys.PARKED):
            continue
        orbit = ch.entry.key[len(Keys.PARKED) :]
        if ch.kind == "delete":
            current.pop(orbit, None)
            continue
        rec = _json(ch.entry.value)
        if rec is None:
            continue
        n += 1
        pid = str(rec.get("park_id", ""))
        held = current.get(orbit)
        if held is not None and held != pid:
            bad.append(f"orbit {orbit} held by {held} and {pid} at revision {ch.entry.mod_revision}")
        current[orbit] = pid
    return _verdict("orbit held by one call at a time", n, bad)


def incarnation(rec: dict[str, Any], lease: int) -> str:
    """The node process that wrote a parked record: ``pool/node#incarnation`` from its holder.

    ``parked/`` records are written without a lease, so the lease tells no process from the
    next (a restarted node taking its call back looked like a stale writer); records written
    before holders carried an incarnation fall back to name and lease.
    """
    holder = rec.get("holder") or {}
    if not isinstance(holder, dict):
        return f"?#lease{lease:x}"
    node = f"{holder['pool']}/{holder.get('node')}" if holder.get("pool") else str(holder.get("node"))
    return f"{node}#{holder['incarnation']}" if holder.get("incarnation") else f"{node}#lease{lease:x}"


def errors_explained(ops: Sequence[Op], grace_s: float = ERROR_GRACE_S) -> Verdict:
    """Every ``error`` operation is explained by a fault: a workload error inside a fault's window
    (its start until ``grace_s`` after its heal). The runner's own errors (the workload did not
    stop, calls did not end) and errors outside every window are never explained."""
    windows = _fault_windows(ops, grace_s)
    errors = [o for o in ops if o.op == "error"]
    bad = [
        f"{o.process} at {o.start:.1f}: {o.detail or 'error'} (no fault explains it)"
        for o in errors
        if o.process == "runner" or not any(start <= o.start <= end for start, end in windows)
    ]
    return _verdict("every error is explained by a fault", len(errors), bad)


def _fault_windows(ops: Sequence[Op], grace_s: float) -> list[tuple[float, float]]:
    """Each fault's span: its start until ``grace_s`` after its heal ended."""
    heals = {o.data.get("fault_start"): o.end for o in ops if o.op == "heal"}
    return [(f.start, max(f.end, heals.get(f.start, f.end)) + grace_s) for f in ops if f.op == "fault"]


def failures_explained(ops: Sequence[Op], grace_s: float = ERROR_GRACE_S) -> Verdict:
    """Every park, retrieval, ringback or hang-up that failed overlaps a fault's span. Outside
    faults nothing may fail: a retrieval answered "busy" by a claim stuck in etcd, a ringback
    that never came, a park refused with a record left behind are defects, not bad luck."""
    windows = _fault_windows(ops, grace_s)
    failed = [o for o in ops if o.op in WORK_OPS and not o.ok]
    bad = [
        f"{o.process}: {o.op} of orbit {o.orbit or '?'} at {o.start:.1f}-{o.end:.1f} failed: {o.detail} "
        "(no fault explains it)"
        for o in failed
        if not any(start <= max(o.end, o.start) and o.start <= end for start, end in windows)
    ]
    return _verdict("every failed operation is explained by a fault", len(failed), bad)


def _member_event(ch: Change) -> tuple[str, dict[str, Any] | None]:
    """``pool/node`` of a member key change and its record (None: the key is gone)."""
    node_id = ch.entry.key[len(Keys.MEMBERS) :]
    return node_id, (_json(ch.entry.value) or {}) if ch.kind == "put" else None


def moves_from_gone_holders(changes: Sequence[Change]) -> Verdict:
    """A call moves to another node process only from one that is gone (its member key absent, or
    held by a later incarnation) or draining, and from a live draining one only while PARKED
    (never mid-ringback or mid-retrieval). Judged at the revision of the write that moved it, from
    the member keys etcd held then. Catches a namesake in another pool adopting calls (identity by
    bare name), a takeover from a node that rejoined, and RINGING/RETRIEVING calls taken from a
    draining node."""
    members: dict[str, dict[str, Any]] = {}
    last: dict[str, dict[str, Any]] = {}  # park id -> its last record
    bad: list[str] = []
    n = 0
    for ch in changes:
        key = ch.entry.key
        if key.startswith(Keys.MEMBERS):
            node_id, rec = _member_event(ch)
            if rec is None:
                members.pop(node_id, None)
            else:
                members[node_id] = rec
            continue
        if ch.kind != "put" or not key.startswith(Keys.PARKED):
            continue
        rec = _json(ch.entry.value)
        if rec is None:
            continue
        pid = str(rec.get("park_id"))
        prev = last.get(pid)
        last[pid] = rec
        if prev is None or incarnation(prev, 0) == incarnation(rec, 0):
            continue
        n += 1
        old = prev.get("holder") or {}
        old_id = f"{old.get('pool')}/{old.get('node')}"
        live = members.get(old_id)
        if live is None or not old.get("incarnation") or live.get("incarnation") != old.get("incarnation"):
            continue  # gone, replaced by a later process, or a record without incarnation: nothing to tell
        where = f"park {pid} (orbit {rec.get('orbit')}) moved from {incarnation(prev, 0)} to {incarnation(rec, 0)}"
        if not live.get("draining"):
            bad.append(f"{where} at revision {ch.entry.mod_revision} while its holder was alive and not draining")
        elif prev.get("state") not in (None, "parked"):
            bad.append(f"{where} at revision {ch.entry.mod_revision}: taken {prev.get('state')} from a draining node")
    return _verdict("a call moves only from a gone or draining holder", n, bad)


def worker_capacity(changes: Sequence[Change], cap: int = WORKER_CALLS) -> Verdict:
    """No worker ever holds more parked calls than it has call slots (takeovers included)."""
    holder_of: dict[str, str] = {}  # orbit -> pool/node#incarnation/worker
    bad: list[str] = []
    n = 0
    for ch in changes:
        if not ch.entry.key.startswith(Keys.PARKED):
            continue
        orbit = ch.entry.key[len(Keys.PARKED) :]
        rec = _json(ch.entry.value) if ch.kind == "put" else None
        if rec is None:
            holder_of.pop(orbit, None)
            continue
        n += 1
        worker = f"{incarnation(rec, ch.entry.lease)}/worker{(rec.get('holder') or {}).get('worker')}"
        holder_of[orbit] = worker
        count = sum(w == worker for w in holder_of.values())
        if count > cap:
            bad.append(f"{worker} holds {count} parked calls at revision {ch.entry.mod_revision} (cap {cap})")
    return _verdict(f"no worker holds more than {cap} calls", n, bad)


def single_server(changes: Sequence[Change], ops: Sequence[Op]) -> Verdict:
    """Fencing: once a call moves from one node incarnation to another, the old one never writes it again;
    and no parked call is connected to two retrievers."""
    history: dict[str, list[tuple[str, int]]] = defaultdict(list)
    bad: list[str] = []
    n = 0
    for ch, rec in _puts(changes, Keys.PARKED):
        n += 1
        who = (incarnation(rec, ch.entry.lease), ch.entry.mod_revision)
        seq = history[str(rec.get("park_id"))]
        if seq and seq[-1][0] != who[0] and any(h == who[0] for h, _ in seq):
            bad.append(
                f"park {rec.get('park_id')} (orbit {rec.get('orbit')}) written again by {who[0]} at revision "
                f"{who[1]} after {seq[-1][0]} took it over"
            )
        seq.append(who)
    served: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.op == "retrieve" and op.ok and op.park_id:
            served[op.park_id].append(op)
    for pid, retrievals in served.items():
        n += 1
        if len(retrievals) > 1:
            bad.append(
                f"park {pid} served to {len(retrievals)} retrievers: " + ", ".join(o.process for o in retrievals)
            )
    return _verdict("one node serves an orbit (fencing)", n, bad)


def epochs_monotonic(changes: Sequence[Change]) -> Verdict:
    last: dict[str, int] = {}
    bad: list[str] = []
    n = 0
    for ch, rec in _puts(changes, Keys.OWNERS):
        n += 1
        rng, epoch = ch.entry.key[len(Keys.OWNERS) :], int(rec.get("epoch", 0))
        if rng in last and epoch <= last[rng]:
            bad.append(f"range {rng} epoch {last[rng]} -> {epoch} at revision {ch.entry.mod_revision}")
        last[rng] = epoch
    return _verdict("epochs never go backwards", n, bad)


def one_outcome(changes: Sequence[Change]) -> tuple[Verdict, dict[str, dict[str, Any]]]:
    """Every park id that was ever parked ends in exactly one allowed outcome."""
    parked: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _, rec in _puts(changes, Keys.PARKED):
        parked.setdefault(str(rec.get("park_id")), rec)
    for ch, rec in _puts(changes, Keys.HISTORY):
        outcomes[ch.entry.key[len(Keys.HISTORY) :]].append(rec)
    bad: list[str] = []
    final: dict[str, dict[str, Any]] = {}
    for pid, rec in parked.items():
        ends = outcomes.get(pid, [])
        if not ends:
            bad.append(f"park {pid} (orbit {rec.get('orbit')}, {rec.get('caller_uri')}) never ended")
            continue
        kinds = {str(e.get("outcome")) for e in ends}
        if len(ends) > 1:
            bad.append(f"park {pid} ended {len(ends)} times: {sorted(kinds)}")
        if not kinds <= OUTCOMES:
            bad.append(f"park {pid} ended with unknown outcome {sorted(kinds - OUTCOMES)}")
        final[pid] = {**ends[-1], "caller_uri": rec.get("caller_uri", "")}
    return _verdict("every parked call ends in exactly one outcome", len(parked), bad), final


def hung_up_before(ops: Sequence[Op], final: dict[str, dict[str, Any]]) -> set[str]:
    """Park ids whose caller had already hung up (an ``abandon`` that completed) when the call ended.

    A node that takes over a call whose caller hung up while the old holder was cut off from etcd
    gets 481 or 603 to its INVITE with Replaces and must record "lost": it cannot tell that from a
    caller it failed to reach. The workload knows; such calls are not lost callers.
    """
    return {
        op.park_id
        for op in ops
        if op.op == "abandon" and op.ok and op.end <= float(final.get(op.park_id, {}).get("ended_at", 0.0))
    }


def hung_up_stay_down(ops: Sequence[Op], final: dict[str, dict[str, Any]]) -> Verdict:
    """A caller who hung up on purpose (an ``abandon`` of a call the workload only held) is never
    connected again: its park does not end retrieved, rang back or forwarded later than
    :data:`RECONNECT_GRACE_S` after the hang-up (a handover racing the hang-up ends sooner).

    Found by the chaos suite: a caller who hung up while its holder was dead (the BYE reached
    nobody) was re-INVITEd with Replaces by the node that took the call over, which pjsip
    accepts while its BYE is unanswered; the call was then rung back to the parker.
    """
    handed = {op.park_id for op in ops if op.op in ("retrieve", "timeout")}
    bad = []
    n = 0
    for op in ops:
        if op.op != "abandon" or not op.ok or not op.park_id or op.park_id in handed:
            continue
        n += 1
        rec = final.get(op.park_id, {})
        outcome, ended = rec.get("outcome"), float(rec.get("ended_at", 0.0))
        if outcome in ("retrieved", "rang-back", "forwarded") and ended > op.end + RECONNECT_GRACE_S:
            bad.append(
                f"{op.process}: {op.caller} hung up at {op.end:.1f}, yet park {op.park_id} (orbit {op.orbit}) "
                f"ended {outcome} at {ended:.1f}"
            )
    return _verdict("a caller who hung up is never connected again", n, bad)


def none_lost(
    final: dict[str, dict[str, Any]],
    replaces_capable: Iterable[str],
    hung_up: set[str] = frozenset(),  # type: ignore[assignment]
) -> Verdict:
    capable = set(replaces_capable)
    bad = [
        f"park {pid} (orbit {e.get('orbit')}) of {e.get('caller_uri')} lost: {e.get('detail')}"
        for pid, e in final.items()
        if e.get("outcome") == "lost"
        and pid not in hung_up
        and any(f"sip:{u}@" in str(e.get("caller_uri")) for u in capable)
    ]
    return _verdict("no call of a Replaces-capable caller lost", len(final), bad)


def acknowledged_parks(ops: Sequence[Op], final: dict[str, dict[str, Any]]) -> Verdict:
    """Every park the parker was told about exists in etcd's history with that orbit and caller (Jepsen's 'lost')."""
    bad = []
    n = 0
    for op in ops:
        if op.op != "park" or not op.ok:
            continue
        n += 1
        rec = final.get(op.park_id)
        if rec is None:
            bad.append(f"{op.process}: parker told orbit {op.orbit} park {op.park_id}, but etcd never had it")
        elif str(rec.get("orbit")) != op.orbit or f"sip:{op.caller}@" not in str(rec.get("caller_uri")):
            bad.append(
                f"{op.process}: told orbit {op.orbit} for {op.caller}, "
                f"etcd says {rec.get('orbit')} {rec.get('caller_uri')}"
            )
    return _verdict("every acknowledged park is in etcd", n, bad)


def right_caller(ops: Sequence[Op], final: dict[str, dict[str, Any]]) -> Verdict:
    """A retrieval (or a ringback) connects exactly the caller parked there, and etcd agrees on the outcome."""
    bad = []
    n = 0
    for op in ops:
        if op.op not in ("retrieve", "timeout") or not op.ok:
            continue
        n += 1
        if op.connected_to != op.caller:
            bad.append(
                f"{op.process}: {op.op} of orbit {op.orbit} "
                f"connected {op.connected_to or 'nobody'}, parked was {op.caller}"
            )
        want = "retrieved" if op.op == "retrieve" else "rang-back"
        got = final.get(op.park_id, {}).get("outcome")
        if op.park_id and got != want:
            bad.append(f"{op.process}: {op.op} of park {op.park_id} connected, but etcd's outcome is {got}")
    return _verdict("a retrieval connects the right caller", n, bad)


def rto(ops: Sequence[Op], bound_s: float) -> tuple[Verdict, float]:
    """After each pool fault, a park probe succeeded within the bound."""
    faults = [o for o in ops if o.op == "fault" and o.data.get("pool_fault")]
    probes = {o.fault + f"@{o.data.get('fault_start')}": o for o in ops if o.op == "probe"}
    bad = []
    worst = 0.0
    for f in faults:
        probe = probes.get(f.fault + f"@{f.start}")
        if probe is None or not probe.ok:
            bad.append(f"{f.fault}: parking never came back ({probe.detail if probe else 'no probe'})")
            continue
        took = float(probe.data.get("rto_s", 1e9))
        worst = max(worst, took)
        if took > bound_s:
            bad.append(f"{f.fault}: parking came back after {took:.2f} s, bound {bound_s:.2f} s")
    return _verdict(f"parking again within {bound_s:.1f} s of a pool fault", len(faults), bad), worst


def one_leader(changes: Sequence[Change]) -> Verdict:
    """Every controller write (event) carries the token of the leader key current at its revision."""
    leader_rev = 0
    last_token = 0
    bad = []
    n = 0
    for ch in changes:
        key = ch.entry.key
        if key == Keys.LEADER:
            leader_rev = ch.entry.create_revision if ch.kind == "put" else 0
            continue
        if ch.kind != "put" or not key.startswith(Keys.EVENTS):
            continue
        rec = _json(ch.entry.value)
        if rec is None or "token" not in rec:
            continue
        n += 1
        token = int(rec["token"])
        if token != leader_rev:
            bad.append(
                f"{rec.get('leader')} wrote {rec.get('kind')} with token {token} "
                f"at revision {ch.entry.mod_revision}; leader key token was {leader_rev}"
            )
        if token < last_token:
            bad.append(f"token went back from {last_token} to {token} at revision {ch.entry.mod_revision}")
        last_token = max(last_token, token)
    return _verdict("at most one controller leader acting", n, bad)


def faults_happened(ops: Sequence[Op]) -> Verdict:
    faults = [o for o in ops if o.op == "fault"]
    heals = {o.data.get("fault_start") for o in ops if o.op == "heal" and o.ok}
    bad = [f"{o.fault}: did not happen ({o.detail})" for o in faults if not o.ok]
    bad += [f"{o.fault}: not healed" for o in faults if o.start not in heals]
    return _verdict("every fault happened and was healed", len(faults), bad)


def no_bug_lines(logs: Iterable[Path]) -> Verdict:
    bad = []
    n = 0
    for path in logs:
        n += 1
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        bad += [f"{path.name}: {line.strip()[:200]}" for line in text.splitlines() if BUG_LINE.search(line)]
    return _verdict('no "BUG" log lines', n, bad)


def check(
    ops: Sequence[Op],
    changes: Sequence[Change],
    *,
    logs: Iterable[Path] = (),
    rto_bound_s: float = 3.0,
    replaces_capable: Iterable[str] = (),
    grace_s: float = ERROR_GRACE_S,
) -> Report:
    """Every invariant over one run; ``grace_s``: how long after a fault's heal its effects may last."""
    outcome, final = one_outcome(changes)
    hung_up = hung_up_before(ops, final)
    rto_verdict, worst = rto(ops, rto_bound_s)
    verdicts = [
        faults_happened(ops),
        errors_explained(ops, grace_s),
        failures_explained(ops, grace_s),
        orbit_exclusive(changes),
        single_server(changes, ops),
        moves_from_gone_holders(changes),
        worker_capacity(changes),
        epochs_monotonic(changes),
        outcome,
        none_lost(final, replaces_capable, hung_up),
        hung_up_stay_down(ops, final),
        acknowledged_parks(ops, final),
        right_caller(ops, final),
        rto_verdict,
        one_leader(changes),
        no_bug_lines(logs),
    ]
    counts: dict[str, int] = defaultdict(int)
    for e in final.values():
        counts[str(e.get("outcome"))] += 1
    work = [o for o in ops if o.op in WORK_OPS]
    numbers = {
        "operations": float(len(work)),
        "operations_ok": float(sum(o.ok for o in work)),
        "parks_ok": float(sum(o.ok for o in work if o.op == "park")),
        "faults": float(sum(o.op == "fault" for o in ops)),
        "calls_lost": float(sum(e.get("outcome") == "lost" and pid not in hung_up for pid, e in final.items())),
        "lost_after_caller_hung_up": float(sum(final.get(pid, {}).get("outcome") == "lost" for pid in hung_up)),
        "worst_rto_s": worst,
        **{f"outcome_{k}": float(v) for k, v in sorted(counts.items())},
    }
    return Report(verdicts, numbers)
