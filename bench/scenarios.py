"""The measured flows: harness overhead, background fill, park/retrieve latency, throughput, cost.

Latency definitions (every timestamp is a phone's own ``ts``, taken inside its pjsua2
callback, so the JSON pipe between phone and benchmark is not part of them):

park (blind, as a user does it): parker P talks to caller A, P REFERs A to the park URI.
  t_refer     A's ``transfer_request`` (A received the REFER)
  t_invite    A's new call ``CALLING`` (A sent its INVITE to the node)
  t_answered  A's new call ``CONFIRMED`` (node's 200 with X-Callpark-Orbit received, ACK sent)
  t_told      P's ``message`` carrying X-Callpark-Orbit: the node told the parker the orbit;
              the node sends it only after it wrote the complete dialog into etcd, so it
              also means "record present with a complete dialog".
  park latency = t_told - t_refer  ("REFER to parked with orbit", the brief's target)
retrieve: retriever R dials the orbit on the holding worker.
  t_r_invite     R's ``CALLING``; t_r_answered R's ``CONFIRMED`` (node answered R);
  t_r_connected  R's replacement call ``CONFIRMED``: A's INVITE/Replaces reached R, the
                 node stepped out and A and R talk directly.
  retrieve latency = t_r_connected - t_r_invite ("INVITE to connected").
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench import procstat
from bench.lab import BenchLab, parallel
from bench.phones import BenchPhone, Event, is_event, is_state
from bench.stats import Summary, histogram_deltas, parse_histograms
from callpark import audio
from callpark.lab.phone import Phone
from callpark.lab.phone.harness import PhoneError
from callpark.waiting import WaitTimeout

log = logging.getLogger(__name__)

CALLS_PER_PHONE = 4  # pjsua2 wheel cap: one phone process holds at most 4 calls
PARKED_PER_WORKER = 3  # the node keeps one of a worker's 4 slots free
ORBIT_HEADER = "X-Callpark-Orbit"
SERVER_HISTOGRAMS = (
    "callpark_park_latency_seconds",
    "callpark_retrieve_latency_seconds",
    "callpark_etcd_request_seconds",
)
STEP_TIMEOUT_S = 10.0

# pjsua2 registers each call's RTP and RTCP sockets in a 64-slot ioqueue and reuses a freed
# slot only 500 ms later (PJ_IOQUEUE_KEY_FREE_DELAY): a process that sets up more than about
# 30 calls in 500 ms aborts (``pj_ioqueue_register_sock2: Assertion !pj_list_empty(...)``).
# That holds for the node's workers and for our phones alike, so every flow is paced.
MIN_ITERATION_S = 0.1  # park+retrieve round: the caller phone sets up 3 calls per round
MIN_HARNESS_CALL_S = 0.05


class FlowError(RuntimeError):
    """A call flow did not go as expected (counted as an error of the run)."""


# --------------------------------------------------------------------------- topology


@dataclass(frozen=True)
class Topology:
    """Which node worker serves what, so that nothing is redirected by accident.

    Background calls fill workers ``0..`` three at a time; each throughput lane has a
    worker of its own; measured park/retrieve calls use the last ``measure_count`` workers
    (each round picks the one with the most free slots: a worker that lost slots to the
    node's slot leak would otherwise redirect every park, adding a 302 to the numbers).
    """

    max_background: int
    lanes: int
    measure_count: int = 4

    @property
    def background_workers(self) -> int:
        return math.ceil(self.max_background / PARKED_PER_WORKER)

    @property
    def lane_workers(self) -> list[int]:
        first = self.background_workers
        return list(range(first, first + max(1, self.lanes)))

    @property
    def measure_workers(self) -> list[int]:
        first = self.background_workers + len(self.lane_workers)
        return list(range(first, first + self.measure_count))

    @property
    def workers(self) -> int:
        return self.background_workers + len(self.lane_workers) + self.measure_count

    def expected_free(self, background: int) -> list[int]:
        """Free slots every worker should report when only ``background`` calls are up."""
        free = [CALLS_PER_PHONE] * self.workers
        for k in range(background):
            free[k // PARKED_PER_WORKER] -= 1
        return free

    @property
    def background_phones(self) -> int:
        return math.ceil(self.max_background / CALLS_PER_PHONE)


# --------------------------------------------------------------------------- helpers


def _ts(event: Event) -> float:
    return float(event["ts"])


def _wait_final(phone: BenchPhone, call: str, since: int, what: str) -> Event:
    """The call's CONFIRMED event, or FlowError if it ended first."""
    event = phone.wait_event(
        is_state(call, "CONFIRMED", "DISCONNECTED"), since=since, timeout=STEP_TIMEOUT_S, what=what
    )
    if event["state"] != "CONFIRMED":
        raise FlowError(f"{what}: {phone.user} {call} ended {event.get('code')} {event.get('reason')}")
    return event


def _wait_ended(phone: BenchPhone, call: str, since: int) -> Event:
    return phone.wait_event(
        is_state(call, "DISCONNECTED"), since=since, timeout=STEP_TIMEOUT_S, what=f"{phone.user} {call} ended"
    )


def reset_phones(*phones: BenchPhone) -> None:
    """After a failed iteration: hang every call up and give the dialogs time to end."""
    for phone in phones:
        with contextlib.suppress(PhoneError, WaitTimeout):
            phone.hangup_all()
    time.sleep(0.5)


def scrape(lab: BenchLab) -> dict[Any, Any]:
    return parse_histograms(lab.metrics_text())


def counters(lab: BenchLab, name: str) -> dict[str, float]:
    """Samples of counter ``name`` in /metrics, by their ``result``/``outcome`` label."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(lab.metrics_text()):
        for sample in family.samples:
            if sample.name == name:
                key = sample.labels.get("result") or sample.labels.get("outcome") or ""
                out[key] = out.get(key, 0.0) + float(sample.value)
    return out


def _counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    return {k: int(v - before.get(k, 0.0)) for k, v in after.items() if v - before.get(k, 0.0)}


# --------------------------------------------------------------------------- harness overhead


def harness_overhead(caller: BenchPhone, callee: BenchPhone, samples: int) -> dict[str, Any]:
    """What the harness itself costs, so the node's share of client-side numbers is clear.

    - ``ping_rtt``: a command round trip with event-driven waits (what this bench uses);
    - ``ping_rtt_stock_harness``: the same with the tests' polling ``Phone.command``;
    - ``command_to_invite``: our clock when the ``call`` command is written to the time the
      phone stamps CALLING (pipe + the phone's wake-up + ``makeCall``);
    - ``event_pipe_delay``: phone ``ts`` to our arrival time of the same event;
    - ``phone_to_phone_setup``: INVITE to CONFIRMED between two phones (no node): the
      floor of any INVITE/200/ACK exchange with these pjsua2 Python processes.
    """
    rtt: list[float] = []
    stock: list[float] = []
    for _ in range(samples):
        caller.command("ping")
        rtt.append(caller.last_command_rtt_s)
    for _ in range(max(5, samples // 2)):
        began = time.perf_counter()
        Phone.command(caller, "ping")
        stock.append(time.perf_counter() - began)
    dispatch: list[float] = []
    setup: list[float] = []
    pipe: list[float] = []
    for _ in range(samples):
        began = time.monotonic()
        since = caller.mark()
        callee_since = callee.mark()
        sent = time.time()
        call = caller.call(callee.uri)
        calling = caller.wait_event(is_state(call, "CALLING"), since=since, timeout=STEP_TIMEOUT_S)
        confirmed = _wait_final(caller, call, since, "phone-to-phone call")
        dispatch.append(_ts(calling) - sent)
        setup.append(_ts(confirmed) - _ts(calling))
        pipe.append(float(confirmed["rx"]) - _ts(confirmed))
        caller.hangup(call)
        _wait_ended(caller, call, since)
        incoming = callee.wait_event(is_event("incoming"), since=callee_since, timeout=STEP_TIMEOUT_S)
        _wait_ended(callee, str(incoming["call"]), callee_since)
        time.sleep(max(0.0, MIN_HARNESS_CALL_S - (time.monotonic() - began)))
    return {
        "ping_rtt": Summary.of_seconds(rtt).as_dict(),
        "ping_rtt_stock_harness": Summary.of_seconds(stock).as_dict(),
        "command_to_invite": Summary.of_seconds(dispatch).as_dict(),
        "event_pipe_delay": Summary.of_seconds(pipe).as_dict(),
        "phone_to_phone_setup": Summary.of_seconds(setup).as_dict(),
    }


# --------------------------------------------------------------------------- background parked calls


@dataclass
class Background:
    """Calls parked directly (phone INVITEs the park URI), held with music."""

    phones: list[BenchPhone]
    held: list[tuple[BenchPhone, str, str]] = field(default_factory=list)  # (phone, call, orbit)

    def fill(self, lab: BenchLab, target: int) -> float:
        """Park calls until ``target`` are held; returns seconds taken."""
        node = lab.node
        assert node is not None
        began = time.monotonic()
        start = len(self.held)
        lock = threading.Lock()

        def park_on(phone_index: int) -> None:
            phone = self.phones[phone_index]
            for k in range(start, target):
                if k // CALLS_PER_PHONE != phone_index:
                    continue
                since = phone.mark()
                call = phone.call(node.park_uri(k // PARKED_PER_WORKER))
                confirmed = _wait_final(phone, call, since, f"background park #{k}")
                orbit = str(confirmed.get("x_headers", {}).get(ORBIT_HEADER, ""))
                if not orbit:
                    raise FlowError(f"background park #{k} answered without {ORBIT_HEADER}")
                with lock:
                    self.held.append((phone, call, orbit))

        needed = sorted({k // CALLS_PER_PHONE for k in range(start, target)})
        parallel([functools.partial(park_on, i) for i in needed], workers=8)
        count = lab.wait_parked_count(target)
        if count != target:
            raise FlowError(f"expected {target} parked records in etcd, found {count}")
        return time.monotonic() - began

    def music_check(self, seconds: float = 1.0) -> dict[str, Any]:
        """Record one background call: the parked caller should hear music on hold."""
        if not self.held:
            return {"checked": False}
        phone, call, orbit = self.held[len(self.held) // 2]
        path = phone.record(call, seconds)
        # The phone replies before pjmedia has flushed the WAV (its last 4 kB block and the
        # header sizes): wait until the file stops growing before reading it.
        size, stable_since, give_up = -1, time.monotonic(), time.monotonic() + 3.0
        while time.monotonic() < give_up:
            now_size = path.stat().st_size if path.exists() else -1
            if now_size != size:
                size, stable_since = now_size, time.monotonic()
            elif time.monotonic() - stable_since > 0.3:
                break
            time.sleep(0.05)
        _, samples = audio.read_wav(path)
        level = audio.rms_level(samples[len(samples) // 10 :])
        return {"checked": True, "orbit": orbit, "rms": round(level, 4), "music_heard": level > 0.01}


# --------------------------------------------------------------------------- park / retrieve latency


@dataclass
class LatencySample:
    refer_to_told: float | None
    refer_to_answered: float
    caller_refer_to_invite: float
    invite_to_answered: float
    command_to_told: float | None
    retrieve_to_answered: float
    retrieve_to_connected: float
    retrieve_command_to_connected: float


@dataclass
class _Parked:
    """A blind park as the phones saw it (the parker already hung up)."""

    sent: float  # when the benchmark told the parker to transfer (its own clock)
    refer: Event
    invite: Event
    answered: Event
    told: Event | None
    orbit: str
    park_call: str
    since: int  # the caller's event mark before the REFER


def _blind_park(lab: BenchLab, parker: BenchPhone, caller: BenchPhone, worker: int, *, told: bool) -> _Parked:
    """P calls A (A answers by itself), then REFERs A to the park URI of ``worker``."""
    node = lab.node
    assert node is not None
    p0, a0 = parker.mark(), caller.mark()
    to_caller = parker.call(caller.uri)
    _wait_final(parker, to_caller, p0, "parker calls caller")
    a_from_parker = str(caller.wait_event(is_event("incoming"), since=a0, timeout=STEP_TIMEOUT_S)["call"])
    _wait_final(caller, a_from_parker, a0, "caller answers parker")
    p1, a1 = parker.mark(), caller.mark()
    sent = time.time()
    parker.blind_transfer(to_caller, node.park_uri(worker))
    refer = caller.wait_event(is_event("transfer_request", call=a_from_parker), since=a1, timeout=STEP_TIMEOUT_S)
    if not refer.get("accepted"):
        raise FlowError("caller refused the REFER")
    park_call = str(refer["new_call"])
    invite = caller.wait_event(is_state(park_call, "CALLING"), since=a1, timeout=STEP_TIMEOUT_S)
    answered = _wait_final(caller, park_call, a1, "park INVITE answered")
    orbit = str(answered.get("x_headers", {}).get(ORBIT_HEADER, ""))
    if not orbit:
        raise FlowError(f"park answered without {ORBIT_HEADER}")
    told_event: Event | None = None
    if told:
        told_event = parker.wait_event(
            lambda e: e.get("event") == "message" and e.get("x_headers", {}).get(ORBIT_HEADER) == orbit,
            since=p1,
            timeout=STEP_TIMEOUT_S,
            what="parker told the orbit",
        )
    _wait_ended(parker, to_caller, p1)
    _wait_ended(caller, a_from_parker, a1)
    return _Parked(sent, refer, invite, answered, told_event, orbit, park_call, a1)


def park_and_retrieve(
    lab: BenchLab, parker: BenchPhone, caller: BenchPhone, retriever: BenchPhone, worker: int, *, told: bool
) -> LatencySample:
    """One blind park and one retrieval on ``worker``; everything hung up afterwards."""
    node = lab.node
    assert node is not None
    parked = _blind_park(lab, parker, caller, worker, told=told)
    # R dials the orbit on the holding worker; the node REFERs A to R with Replaces
    r0, a2 = retriever.mark(), caller.mark()
    r_sent = time.time()
    to_orbit = retriever.call(node.orbit_uri(parked.orbit, worker))
    r_invite = retriever.wait_event(is_state(to_orbit, "CALLING"), since=r0, timeout=STEP_TIMEOUT_S)
    r_answered = _wait_final(retriever, to_orbit, r0, "retrieval answered")
    replaced = retriever.wait_event(is_event("replaced", call=to_orbit), since=r0, timeout=STEP_TIMEOUT_S)
    r_call = str(replaced["new_call"])
    connected = _wait_final(retriever, r_call, r0, "retriever connected to the caller")
    # everything down again
    a_to_r = str(
        caller.wait_event(is_event("transfer_request", call=parked.park_call), since=a2, timeout=5)["new_call"]
    )
    retriever.hangup(r_call)
    _wait_ended(retriever, r_call, r0)
    _wait_ended(retriever, to_orbit, r0)
    _wait_ended(caller, parked.park_call, parked.since)
    _wait_ended(caller, a_to_r, a2)
    refer, told_event = parked.refer, parked.told
    return LatencySample(
        refer_to_told=_ts(told_event) - _ts(refer) if told_event else None,
        refer_to_answered=_ts(parked.answered) - _ts(refer),
        caller_refer_to_invite=_ts(parked.invite) - _ts(refer),
        invite_to_answered=_ts(parked.answered) - _ts(parked.invite),
        command_to_told=_ts(told_event) - parked.sent if told_event else None,
        retrieve_to_answered=_ts(r_answered) - _ts(r_invite),
        retrieve_to_connected=_ts(connected) - _ts(r_invite),
        retrieve_command_to_connected=_ts(connected) - r_sent,
    )


def _roomiest(lab: BenchLab, workers: Sequence[int]) -> int:
    """The worker of ``workers`` with the most free slots (the node's own view)."""
    free = {int(w["index"]): int(w.get("free") or 0) for w in lab.node_view()["workers"]}
    return max(workers, key=lambda w: (free.get(w, 0), -w))


def latency_run(
    lab: BenchLab,
    parker: BenchPhone,
    caller: BenchPhone,
    retriever: BenchPhone,
    workers: Sequence[int],
    *,
    samples: int,
    told: bool,
    deadline_s: float,
) -> dict[str, Any]:
    """``samples`` park+retrieve rounds (bounded by ``deadline_s``) and the server's view of them."""
    before = scrape(lab)
    parks_before = counters(lab, "callpark_parks_total")
    retrievals_before = counters(lab, "callpark_retrievals_total")
    results: list[LatencySample] = []
    errors: Counter[str] = Counter()
    ends = time.monotonic() + deadline_s
    for _ in range(samples):
        began = time.monotonic()
        if began > ends:
            errors["stopped: phase time limit"] += 1
            break
        try:
            worker = _roomiest(lab, workers)
            results.append(park_and_retrieve(lab, parker, caller, retriever, worker, told=told))
        except (FlowError, WaitTimeout, PhoneError) as exc:
            errors[str(exc).split("\n", 1)[0][:120]] += 1
            reset_phones(parker, caller, retriever)
        time.sleep(max(0.0, MIN_ITERATION_S - (time.monotonic() - began)))
    after = scrape(lab)

    def summary(pick: Callable[[LatencySample], float | None]) -> dict[str, Any]:
        values = [v for v in (pick(s) for s in results) if v is not None]
        return Summary.of_seconds(values).as_dict()

    return {
        "samples": len(results),
        "errors": dict(errors),
        "park_refer_to_parker_told": summary(lambda s: s.refer_to_told),
        "park_refer_to_caller_answered": summary(lambda s: s.refer_to_answered),
        "park_caller_refer_to_invite": summary(lambda s: s.caller_refer_to_invite),
        "park_invite_to_answered": summary(lambda s: s.invite_to_answered),
        "park_command_to_parker_told": summary(lambda s: s.command_to_told),
        "retrieve_invite_to_answered": summary(lambda s: s.retrieve_to_answered),
        "retrieve_invite_to_connected": summary(lambda s: s.retrieve_to_connected),
        "retrieve_command_to_connected": summary(lambda s: s.retrieve_command_to_connected),
        "server": histogram_deltas(before, after, SERVER_HISTOGRAMS),
        "node_parks_total": _counter_delta(parks_before, counters(lab, "callpark_parks_total")),
        "node_retrievals_total": _counter_delta(retrievals_before, counters(lab, "callpark_retrievals_total")),
    }


# --------------------------------------------------------------------------- sustained parks


@dataclass
class _Lanes:
    """Parking lanes: each its own phone and worker, at most ``lane_rate`` parks per second."""

    phones: Sequence[BenchPhone]
    uris: Sequence[str]
    lane_rate: float
    stop_at: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    ok_latency: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    completions: int = 0

    def run(self, index: int) -> None:
        """Lane ``index``: park, wait for the answer, hang up, repeat until ``stop_at``."""
        phone, uri = self.phones[index], self.uris[index]
        period = 1.0 / self.lane_rate
        next_start = time.monotonic() + period * index / len(self.phones)  # stagger the lanes
        while True:
            now = time.monotonic()
            if next_start > now:
                time.sleep(next_start - now)
            if time.monotonic() >= self.stop_at:
                return
            next_start = max(next_start + period, time.monotonic())
            self._park_once(phone, uri)

    def _park_once(self, phone: BenchPhone, uri: str) -> None:
        since = phone.mark()
        try:
            call = phone.call(uri)
            invite = phone.wait_event(is_state(call, "CALLING"), since=since, timeout=STEP_TIMEOUT_S)
            final = phone.wait_event(is_state(call, "CONFIRMED", "DISCONNECTED"), since=since, timeout=STEP_TIMEOUT_S)
            if final["state"] == "CONFIRMED" and final.get("x_headers", {}).get(ORBIT_HEADER):
                with self.lock:
                    self.completions += 1
                    self.ok_latency.append(_ts(final) - _ts(invite))
                phone.hangup(call)
            else:
                with self.lock:
                    self.errors[f"{final.get('code')} {final.get('reason')}"] += 1
            _wait_ended(phone, call, since)
        except (WaitTimeout, PhoneError) as exc:
            with self.lock:
                self.errors[str(exc).split("\n", 1)[0][:120]] += 1
            reset_phones(phone)


def throughput_run(
    lab: BenchLab,
    lanes: Sequence[BenchPhone],
    workers: Sequence[int],
    seconds: float,
    lane_rate: float,
    others: Sequence[BenchPhone] = (),
) -> dict[str, Any]:
    """Each lane parks (INVITE to the park URI), waits for the answer, hangs up, repeats.

    A completion is a park answered 200 with an orbit; the caller then hangs up (the node
    frees the record). Each lane has its own phone and worker and starts at most
    ``lane_rate`` parks per second (see MIN_ITERATION_S for why pjsua2 needs pacing), so
    the offered load is at most ``lanes * lane_rate``; a result close to that cap means the
    node kept up and the cap, not the node, was the limit.
    """
    node = lab.node
    assert node is not None
    baseline = lab.parked_count()
    hist_before = scrape(lab)
    parks_before = counters(lab, "callpark_parks_total")
    ended_before = counters(lab, "callpark_parked_calls_ended_total")
    uris = [node.park_uri(workers[index % len(workers)]) for index in range(len(lanes))]
    state = _Lanes(lanes, uris, lane_rate, stop_at=time.monotonic() + seconds)
    window = procstat.Window(process_groups(lab, others)[0]).begin()
    began = time.monotonic()
    parallel([functools.partial(state.run, i) for i in range(len(lanes))], workers=len(lanes))
    elapsed = time.monotonic() - began
    cpu = {name: round(u.cpu_pct_of_core, 1) for name, u in window.end().items() if name != "busy_workers"}
    settled = lab.wait_parked_count(baseline, timeout_s=15.0)
    completions, errors = state.completions, state.errors
    return {
        "lanes": len(lanes),
        "lane_rate_cap_per_s": lane_rate,
        "offered_cap_per_s": round(lane_rate * len(lanes), 1),
        "workers": list(workers),
        "seconds": round(elapsed, 3),
        "completions": completions,
        "parks_per_s": round(completions / elapsed, 2) if elapsed > 0 else 0.0,
        "errors": dict(errors),
        "error_count": sum(errors.values()),
        "invite_to_answered": Summary.of_seconds(state.ok_latency).as_dict(),
        "records_left_behind": settled - baseline,
        "cpu_pct_of_core_during_run": cpu,
        "node_parks_total": _counter_delta(parks_before, counters(lab, "callpark_parks_total")),
        "node_ended_total": _counter_delta(ended_before, counters(lab, "callpark_parked_calls_ended_total")),
        "server": histogram_deltas(hist_before, scrape(lab), SERVER_HISTOGRAMS),
    }


# --------------------------------------------------------------------------- cost


def slot_check(lab: BenchLab, topo: Topology, background: int) -> dict[str, Any]:
    """Workers reporting fewer free slots than the calls they should hold explain.

    With every measured call hung up, a worker's free slots should be 4 minus its
    background calls; anything less is a slot the worker lost (a call object it still
    counts as live although pjsua ended it).
    """
    expected = topo.expected_free(background)
    seen = [int(w.get("free") or 0) for w in lab.node_view()["workers"]]
    lost = {i: e - f for i, (e, f) in enumerate(zip(expected, seen, strict=False)) if f < e}
    return {"lost_slots": sum(lost.values()), "by_worker": lost}


def process_groups(lab: BenchLab, phones: Sequence[BenchPhone]) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """PIDs by role (supervisor, workers, workers holding calls, phones, etcd) and the node view."""
    supervisor, workers = lab.node_pids()
    view = lab.node_view()
    busy = [int(w["pid"]) for w in view["workers"] if w.get("pid") and int(w.get("free", 4)) < CALLS_PER_PHONE]
    groups: dict[str, list[int]] = {
        "supervisor": [supervisor],
        "workers": workers,
        "busy_workers": busy,
        "phones": [p.pid for p in phones if p.process.is_running()],
    }
    if lab.etcd is not None:
        groups["etcd"] = [m.pid for m in lab.etcd.members if m.is_running()]
    groups["bench"] = [os.getpid()]  # this process: the lanes' and readers' threads
    return groups, view


def cost_sample(lab: BenchLab, parked: int, window_s: float, phones: Sequence[BenchPhone]) -> dict[str, Any]:
    """CPU and memory of the node's processes (and, for context, of phones and etcd)."""
    groups, view = process_groups(lab, phones)
    usage = procstat.measure(groups, window_s)
    node_cpu = usage["supervisor"].cpu_pct_of_core + usage["workers"].cpu_pct_of_core
    node_pss = usage["supervisor"].pss_mb + usage["workers"].pss_mb
    return {
        "parked": parked,
        "parked_in_etcd": lab.parked_count(),
        "window_s": round(window_s, 2),
        "node_cpu_pct_of_core": round(node_cpu, 3),
        "node_pss_mb": round(node_pss, 2),
        "node_rss_mb": round(usage["supervisor"].rss_mb + usage["workers"].rss_mb, 2),
        "node_uss_mb": round(usage["supervisor"].uss_mb + usage["workers"].uss_mb, 2),
        "groups": {name: u.as_dict() for name, u in usage.items()},
        "worker_free_slots": [w.get("free") for w in view["workers"]],
        "load_average": [round(x, 2) for x in procstat.load_average()],
    }


def cost_per_call(levels: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-call increments against the 0-call level, and amortised totals per call.

    ``marginal``: (level - idle) / calls, the cost a call adds to workers already running.
    ``amortised_busy``: (supervisor + the workers that hold calls) / calls, i.e. a node
    sized for exactly these calls (3 per worker); the honest number against the target.
    """
    idle = next((lv for lv in levels if lv["parked"] == 0), None)
    out: list[dict[str, Any]] = []
    for lv in levels:
        n = int(lv["parked"])
        if n == 0:
            continue
        g = lv["groups"]
        row: dict[str, Any] = {"parked": n}
        if idle is not None:
            row["marginal_cpu_pct_per_call"] = round((lv["node_cpu_pct_of_core"] - idle["node_cpu_pct_of_core"]) / n, 4)
            row["marginal_pss_mb_per_call"] = round((lv["node_pss_mb"] - idle["node_pss_mb"]) / n, 3)
        busy_cpu = g["supervisor"]["cpu_pct_of_core"] + g["busy_workers"]["cpu_pct_of_core"]
        busy_pss = g["supervisor"]["pss_mb"] + g["busy_workers"]["pss_mb"]
        busy_uss = g["supervisor"]["uss_mb"] + g["busy_workers"]["uss_mb"]
        row["amortised_busy_cpu_pct_per_call"] = round(busy_cpu / n, 4)
        row["amortised_busy_pss_mb_per_call"] = round(busy_pss / n, 3)
        row["amortised_busy_uss_mb_per_call"] = round(busy_uss / n, 3)
        row["busy_workers"] = g["busy_workers"]["processes"]
        if g["busy_workers"]["processes"]:
            row["pss_mb_per_busy_worker"] = round(g["busy_workers"]["pss_mb"] / g["busy_workers"]["processes"], 2)
        row["node_total_cpu_pct_per_call"] = round(lv["node_cpu_pct_of_core"] / n, 4)
        row["node_total_pss_mb_per_call"] = round(lv["node_pss_mb"] / n, 3)
        out.append(row)
    return out
