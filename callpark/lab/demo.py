"""The README's main job: a real park and retrieve on the embedded default cluster.

Starts etcd, the nodes of every pool and the SIP edge; three softphones register
with the edge; the parker blind-transfers a caller to the park URI, learns the orbit
from the node's MESSAGE; the caller hears the music; a third phone retrieves the call
by dialling the orbit and the two talk (tones checked both ways). Prints each step,
``callpark status`` and a verdict; exit status 0 only when every check held.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from callpark import audio, status, tables
from callpark.deployment import Deployment
from callpark.lab.localcluster import LocalCluster
from callpark.lab.phone import Phone
from callpark.model.music import DEFAULT_NOTES_HZ
from callpark.netutil import LOOPBACK
from callpark.store.admin import AdminStore
from callpark.store.etcd import EtcdStore
from callpark.store.parking import read_history, read_parked
from callpark.store.schema import Keys
from callpark.waiting import wait_until


class Checks:
    """Named checks with their results, printed as they happen."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.results: list[tuple[str, bool, str]] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.results.append((name, ok, detail))
        print(f"  [{'ok' if ok else 'FAILED'}] {name}{': ' + detail if detail else ''}", file=self.out, flush=True)
        return ok

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.results)


def _confirmed(phone: Phone, contains: str, timeout: float = 10.0) -> str:
    def find() -> str | None:
        return next(
            (str(c["call"]) for c in phone.calls() if c["state"] == "CONFIRMED" and contains in str(c["remote_uri"])),
            None,
        )

    return wait_until(find, timeout=timeout, what=f"{phone.user} connected to {contains}")


def _hears(phone: Phone, call: str, freqs: list[float], seconds: float = 1.6) -> float:
    path = phone.record(call, seconds)
    return sum(audio.analyse_tone(path, f, skip_s=0.1).presence for f in freqs)


def run(dep: Deployment, out: TextIO, run_dir: Path | None = None) -> int:
    """Start the cluster, park and retrieve one call, print every check and a verdict; 0 when all held."""
    base = run_dir or Path(tempfile.mkdtemp(prefix="callpark-demo-"))
    checks = Checks(out)
    print(f"callpark demo: {dep.path.name}, run dir {base}", file=out, flush=True)
    with LocalCluster(dep, base) as cluster:
        _print_started(dep, cluster, out)
        phones: list[Phone] = []
        try:
            parker = _phone(cluster, base, phones, "parker")
            alice = _phone(cluster, base, phones, "alice", auto_answer=True)
            carol = _phone(cluster, base, phones, "carol")
            fields = _park(cluster, out, checks, parker, alice)
            _retrieve(cluster, out, checks, fields, alice, carol)
            assert cluster.store is not None
            print("\n3. callpark status\n", file=out, flush=True)
            print(status.render(status.collect(cluster.store, AdminStore(cluster.store))), file=out, flush=True)
        finally:
            for p in phones:
                p.stop()
    print("\nstopped phones, nodes, edge and etcd", file=out)
    verdict = "PASS" if checks.passed else "FAIL"
    print(f"verdict: {verdict} ({sum(ok for _, ok, _ in checks.results)}/{len(checks.results)} checks)", file=out)
    return 0 if checks.passed else 1


def _print_started(dep: Deployment, cluster: LocalCluster, out: TextIO) -> None:
    s = cluster.started_s
    nodes = ", ".join(f"{n.name} ({len(n.info['workers'])} workers)" for n in cluster.all_nodes())
    print(
        f"started etcd: {dep.etcd.members} member(s) at {cluster.endpoints} in {s['etcd']:.2f} s\n"
        f"started park nodes: {nodes} in {s['nodes']:.2f} s\n"
        f"started SIP edge (Kamailio) at {cluster.edge_address} in {s['edge']:.2f} s",
        file=out,
        flush=True,
    )


def _phone(cluster: LocalCluster, base: Path, phones: list[Phone], user: str, **kw: Any) -> Phone:
    """A registered softphone that sends through the edge (added to ``phones`` to be stopped)."""
    p = Phone(user, log_dir=base / "phones", registrar=cluster.edge_address, proxy=cluster.edge_address, **kw)
    phones.append(p)
    p.start()
    p.register()
    return p


def _park(cluster: LocalCluster, out: TextIO, checks: Checks, parker: Phone, alice: Phone) -> dict[str, str]:
    """Step 1: parker calls alice and parks her; returns the fields of the orbit MESSAGE."""
    print("\n1. parker calls alice, then parks her (blind transfer to sip:park)", file=out, flush=True)
    since = parker.mark()
    to_alice = parker.call(f"sip:alice@{LOOPBACK}")
    parker.wait_state(to_alice, "CONFIRMED", timeout=10)
    t0 = time.monotonic()
    parker.blind_transfer(to_alice, f"sip:park@{LOOPBACK}")
    message = parker.wait_event(lambda e: e["event"] == "message", since=since, timeout=10, what="orbit MESSAGE")
    park_ms = (time.monotonic() - t0) * 1000
    fields = dict(line.split("=", 1) for line in str(message["body"]).splitlines() if "=" in line)
    orbit = fields.get("orbit", "?")
    checks.check("parker told the orbit by SIP MESSAGE", orbit != "?", f"orbit {orbit} after {park_ms:.0f} ms")
    assert cluster.store is not None
    _print_parked(cluster.store, out)
    a_call = _confirmed(alice, "park@")
    presence = _hears(alice, a_call, sorted(set(DEFAULT_NOTES_HZ)))
    checks.check("parked caller hears the music on hold", presence >= 0.6, f"music in {presence:.0%} of 1.6 s")
    return fields


def _retrieve(
    cluster: LocalCluster, out: TextIO, checks: Checks, fields: dict[str, str], alice: Phone, carol: Phone
) -> None:
    """Step 2: carol dials the orbit; the two hear each other; the orbit is freed once."""
    orbit = fields.get("orbit", "?")
    print(f"\n2. carol dials the orbit {orbit} from another phone", file=out, flush=True)
    t0 = time.monotonic()
    c_call = carol.call(f"sip:{orbit}@{LOOPBACK}")
    carol.wait_state(c_call, "CONFIRMED", timeout=10)
    retrieve_ms = (time.monotonic() - t0) * 1000
    a_to_c = _confirmed(alice, "carol@")
    c_to_a = _confirmed(carol, "alice@")
    checks.check("carol is connected to alice", True, f"{retrieve_ms:.0f} ms, node stepped out (Replaces)")
    for src, s_call, dst, d_call, freq in (
        (alice, a_to_c, carol, c_to_a, 1000.0),
        (carol, c_to_a, alice, a_to_c, 1300.0),
    ):
        src.play_tone(s_call, freq)
        heard = _hears(dst, d_call, [freq], 0.8)
        src.stop_play(s_call)
        checks.check(f"{dst.user} hears {src.user} ({freq:.0f} Hz tone)", heard >= 0.6, f"{heard:.0%}")
    store = cluster.store
    assert store is not None
    outcome = wait_until(lambda: _outcome(store, fields.get("park-id", "")), timeout=10, what="outcome")
    checks.check("orbit freed exactly once, outcome recorded", outcome == "retrieved", f"outcome {outcome}")
    checks.check("no call left parked", not store.get_prefix(Keys.PARKED).entries)


def _outcome(store: EtcdStore | None, park_id: str) -> str | None:
    if store is None:
        return None
    record = read_history(store, park_id)
    return None if record is None else str(record["outcome"])


def _print_parked(store: EtcdStore, out: TextIO) -> None:
    calls = [h.call for h in read_parked(store)]
    now = time.time()
    print(
        tables.render(
            ["ORBIT", "CALLER", "PARKER", "NEXT RINGBACK", "HOLDER"],
            [
                (
                    c.orbit,
                    c.caller_uri,
                    c.parker_uri,
                    f"in {c.deadline - now:.0f}s",
                    f"{c.holder.node}/w{c.holder.worker}",
                )
                for c in calls
            ],
        ),
        file=out,
        flush=True,
    )


__all__: list[str] = ["run"]
