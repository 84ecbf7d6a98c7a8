"""The chaos workload: pjsua2 phones that park, retrieve, hang up and let calls time out.

Each *pair* is a parker, a caller (auto-answering) and a retriever, all registered at
the edge. A pair loops: the parker calls the caller and blind-parks it, learns the
orbit and park id from the node's MESSAGE, then (seeded choice) a retriever dials the
orbit (or the retrieve URI with the park id), the caller hangs up, or nobody retrieves
and the parker answers the ringback. Every step is an :class:`~callpark.chaos.history.Op`
with start, end and what the phones saw: that is what the checker judges.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callpark.chaos.history import History, Op
from callpark.lab.phone import Phone
from callpark.lab.phone.flows import call_and_answer
from callpark.netutil import LOOPBACK
from callpark.waiting import WaitTimeout, wait_until

log = logging.getLogger(__name__)

ACTIONS = ("retrieve", "abandon", "timeout")
WEIGHTS = (6, 2, 2)
CALLER_RE = re.compile(r"sip:(caller\d+)@")


@dataclass
class WorkloadConfig:
    pairs: int = 3
    rate: float = 1.0  # new parks per second, all pairs together (an upper bound: a cycle takes its time)
    hold_s: tuple[float, float] = (0.5, 2.5)  # how long a call stays parked before a retrieve or abandon
    pickup_timeout_s: float = 10.0  # the cluster's CallPickupTimeoutThreshold
    ring_time_s: float = 4.0
    # how long one step (a park answered and told, a retrieval answered) may take: the runner sets it
    # from the cluster's timings (chaos.bounds: a takeover, a ringback, writes retried)
    settle_s: float = 20.0


@dataclass
class Pair:
    index: int
    parker: Phone
    caller: Phone
    retriever: Phone
    rng: random.Random
    cycles: int = 0


def _idle(phone: Phone) -> bool:
    return not any(c.get("state") not in ("DISCONNECTED", None) for c in phone.calls())


def _ringback_of(event: dict[str, Any], orbit: str) -> bool:
    """Whether an ``incoming`` event is the park service ringing back ``orbit``."""
    headers = {k.lower(): v for k, v in dict(event.get("x_headers") or {}).items()}
    return headers.get("x-callpark-ringback") == "1" and headers.get("x-callpark-orbit") == orbit


def _handle_no(handle: object) -> int:
    """The number of a phone-local call handle (``"c12"`` -> 12)."""
    return int(str(handle).lstrip("c") or 0)


def parse_notification(body: str) -> dict[str, str]:
    """``orbit``, ``park-id`` and ``retrieve-uri`` from the node's MESSAGE to the parker."""
    found = {}
    for line in body.replace("\r", "").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key.strip() in ("orbit", "park-id", "retrieve-uri"):
            found[key.strip()] = value.strip()
    return found


@dataclass
class Workload:
    """Runs the pairs in threads until :meth:`stop`; every operation lands in ``history``."""

    history: History
    edge: str
    log_dir: Path
    seed: int
    config: WorkloadConfig = field(default_factory=WorkloadConfig)
    pairs: list[Pair] = field(default_factory=list)
    phones: list[Phone] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def phone(self, user: str, **kw: Any) -> Phone:
        p = Phone(user, log_dir=self.log_dir, registrar=self.edge, proxy=self.edge, **kw)
        self.phones.append(p)
        p.start()
        p.register()
        return p

    def start(self) -> Workload:
        for i in range(self.config.pairs):
            self.pairs.append(
                Pair(
                    i,
                    parker=self.phone(f"parker{i}", auto_answer=True),
                    caller=self.phone(f"caller{i}", auto_answer=True),
                    retriever=self.phone(f"retriever{i}"),
                    rng=random.Random(self.seed * 1000 + i),
                )
            )
        for pair in self.pairs:
            t = threading.Thread(target=self._loop, args=(pair,), name=f"pair-{pair.index}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Let every pair finish its cycle (which ends its call); True when all did."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=timeout_s)
        return not any(t.is_alive() for t in self._threads)

    def close(self) -> None:
        self._stop.set()
        for p in self.phones:
            try:
                p.stop()
            except Exception as exc:  # noqa: BLE001 - stop the rest
                log.warning("stopping %s: %s", p.user, exc)

    # -- one pair --------------------------------------------------------------------------

    def _loop(self, pair: Pair) -> None:
        gap = self.config.pairs / max(self.config.rate, 0.01)
        while not self._stop.is_set():
            try:
                self._cycle(pair)
            except Exception as exc:  # noqa: BLE001 - a workload records failures and goes on
                self.history.add(
                    Op(f"pair-{pair.index}", "error", time.time(), detail=f"{exc.__class__.__name__}: {exc}")
                )
                log.warning("pair %d: %s", pair.index, exc)
            self._tidy(pair)
            pair.cycles += 1
            self._stop.wait(pair.rng.uniform(0.5 * gap, 1.5 * gap))

    def _tidy(self, pair: Pair) -> None:
        for p in (pair.parker, pair.caller, pair.retriever):
            try:
                p.hangup_all()
                wait_until(functools.partial(_idle, p), timeout=self.config.settle_s, what=f"{p.user} idle")
            except Exception as exc:  # noqa: BLE001 - best effort between cycles
                log.info("tidy %s: %s", p.user, exc)

    def _cycle(self, pair: Pair) -> None:
        name = f"pair-{pair.index}"
        parked = self._park(name, pair)
        if parked is None:
            return
        action = pair.rng.choices(ACTIONS, WEIGHTS)[0]
        if action != "timeout":
            self._stop.wait(pair.rng.uniform(*self.config.hold_s))
        if action == "retrieve":
            with_park_id = pair.rng.random() < 0.5
            if not self._retrieve(name, pair, parked, with_park_id):
                self._abandon(name, pair, parked)
        elif action == "abandon":
            self._abandon(name, pair, parked)
        else:
            self._timeout(name, pair, parked)

    def _park(self, name: str, pair: Pair) -> Op | None:
        op = self.history.begin(name, "park", caller=pair.caller.user)
        seen = len(pair.parker.messages())
        try:
            handle = call_and_answer(pair.parker, pair.caller, f"sip:{pair.caller.user}@{LOOPBACK}")
            pair.parker.blind_transfer(handle, f"sip:park@{LOOPBACK}")

            def told() -> dict[str, str] | None:
                for m in pair.parker.messages()[seen:]:
                    fields = parse_notification(str(m.get("body", "")))
                    if "orbit" in fields:
                        return fields
                return None

            fields = wait_until(told, timeout=self.config.settle_s, what=f"{pair.parker.user} told the orbit")
        except Exception as exc:  # noqa: BLE001 - recorded as a failed park
            self.history.finish(op, False, detail=f"{exc.__class__.__name__}: {exc}")
            return None
        self.history.finish(
            op,
            True,
            orbit=fields["orbit"],
            park_id=fields.get("park-id", ""),
            data={"retrieve_uri": fields.get("retrieve-uri", "")},
        )
        return op

    def _retrieve(self, name: str, pair: Pair, parked: Op, with_park_id: bool) -> bool:
        uri = str(parked.data.get("retrieve_uri") or "") if with_park_id else ""
        uri = uri or f"sip:{parked.orbit}@{LOOPBACK}"
        op = self.history.begin(
            name, "retrieve", orbit=parked.orbit, caller=pair.caller.user, park_id=parked.park_id, data={"uri": uri}
        )
        r = pair.retriever
        old = self._handles(r)
        try:
            since = r.mark()
            handle = r.call(uri)
            event = r.wait_event(
                lambda e: (
                    e["event"] == "call_state" and e["call"] == handle and e["state"] in ("CONFIRMED", "DISCONNECTED")
                ),
                since=since,
                timeout=self.config.settle_s,
                what="retrieval answered",
            )
            if event["state"] != "CONFIRMED":
                self.history.finish(op, False, detail=f"not answered: {event.get('last_status', '')}")
                return False
            connected = wait_until(
                lambda: self._talking_to_caller(r, old),
                timeout=self.config.settle_s,
                what=f"{r.user} talking to a caller",
            )
        except (WaitTimeout, Exception) as exc:  # noqa: BLE001 - recorded as a failed retrieve
            self.history.finish(op, False, detail=f"{exc.__class__.__name__}: {exc}")
            return False
        self.history.finish(op, True, connected_to=connected)
        return True

    @staticmethod
    def _handles(phone: Phone) -> set[str]:
        return {str(c["call"]) for c in phone.calls()}

    @staticmethod
    def _talking_to_caller(phone: Phone, old: set[str]) -> str | None:
        """The caller a *new* confirmed call of ``phone`` talks to (calls in ``old`` predate the step)."""
        for c in sorted(phone.calls(), key=lambda c: -_handle_no(c["call"])):
            if c.get("state") == "CONFIRMED" and str(c["call"]) not in old:
                m = CALLER_RE.search(str(c.get("remote_uri", "")))
                if m:
                    return m.group(1)
        return None

    def _abandon(self, name: str, pair: Pair, parked: Op) -> None:
        op = self.history.begin(name, "abandon", orbit=parked.orbit, caller=pair.caller.user, park_id=parked.park_id)
        try:
            pair.caller.hangup_all()
        except Exception as exc:  # noqa: BLE001 - recorded
            self.history.finish(op, False, detail=f"{exc.__class__.__name__}: {exc}")
            return
        self.history.finish(op, True)

    def _timeout(self, name: str, pair: Pair, parked: Op) -> None:
        op = self.history.begin(name, "timeout", orbit=parked.orbit, caller=pair.caller.user, park_id=parked.park_id)
        limit = self.config.pickup_timeout_s + self.config.ring_time_s + self.config.settle_s
        since = pair.parker.mark()
        try:
            ring = pair.parker.wait_event(
                lambda e: e["event"] == "incoming" and _ringback_of(e, str(parked.orbit)),
                since=since,
                timeout=limit,
                what=f"ringback of orbit {parked.orbit} to {pair.parker.user}",
            )
            # the ringback's own call or the caller's INVITE/Replaces that replaces it: a call of
            # another park's ringback (the same caller parked before) is not this op's outcome
            before = {str(c["call"]) for c in pair.parker.calls() if _handle_no(c["call"]) < _handle_no(ring["call"])}
            connected = wait_until(
                lambda: self._talking_to_caller(pair.parker, before),
                timeout=self.config.ring_time_s + self.config.settle_s,
                what=f"ringback of orbit {parked.orbit} connected to {pair.parker.user}",
            )
        except (WaitTimeout, Exception) as exc:  # noqa: BLE001 - recorded
            self.history.finish(op, False, detail=f"{exc.__class__.__name__}: {exc}")
            self._abandon(name, pair, parked)
            return
        self.history.finish(op, True, connected_to=connected)
