"""``python -m bench.repro {callgc,ghost,burst}``: small, bounded reproductions of two node defects.

callgc  A one-worker node, park + retrieve rounds (blind park, retrieval with Replaces).
        Prints each round where the worker's free slots drop although every call ended,
        the parks the node then redirected, and retrievals counted vs observed by the
        retrieve-latency histogram. Cause: ``Worker.bury`` lets old, ended ``WorkerCall``
        objects be garbage-collected at any later time; pjsua2's ``Call`` destructor then
        hangs up (and detaches from Python) whatever live call now has the same pjsua call
        id (ids 0..3 are reused), so that live call ends without the worker noticing.
ghost   The same defect hitting parked callers: a one-worker node serves 10 park+hang-up
        calls, then holds 3 parked calls, then answers 10 INVITEs to an empty orbit (404).
        Prints whether the parked callers are still connected and what etcd and the node
        still believe (records left parked, free slots).
burst   A one-worker node; INVITEs to a non-orbit number (answered 404) sent from a plain
        UDP socket, ``--count`` of them ``--gap`` seconds apart. Prints whether the worker
        died. Cause: every pjsua2 call registers its RTP and RTCP sockets in a 64-slot
        ioqueue and a freed slot is reused only 500 ms later; about 31 calls inside 500 ms
        exhaust it and pjlib aborts the process (SIGABRT).

Only loopback is used; every process is stopped by PID before the command returns.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.lab import BenchLab, port_is_free
from bench.phones import is_state
from bench.scenarios import FlowError, park_and_retrieve, reset_phones
from callpark.lab.phone.harness import PhoneError
from callpark.netutil import LOOPBACK
from callpark.waiting import WaitTimeout


def callgc(rounds: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="callpark-repro-"))
    lab = BenchLab(root)
    out: dict[str, Any] = {"rounds": rounds, "slot_drops": [], "errors": 0}
    try:
        lab.start_etcd()
        node = lab.start_node(1)
        told = port_is_free(5060)
        parker = lab.phone("parker", sip_port=5060 if told else None)
        caller = lab.phone("caller")
        caller.set_auto_answer(200)
        retriever = lab.phone("retriever")
        free_before = 4
        for i in range(rounds):
            began = time.monotonic()
            try:
                park_and_retrieve(lab, parker, caller, retriever, 0, told=told)
            except (FlowError, WaitTimeout, PhoneError) as exc:
                out["errors"] += 1
                out.setdefault("first_error", {"round": i, "error": str(exc).splitlines()[0][:160]})
                reset_phones(parker, caller, retriever)
                if out["errors"] >= 3:
                    out["stopped_after_round"] = i
                    break
            time.sleep(max(0.0, 0.15 - (time.monotonic() - began)))
            free = int(lab.node_view()["workers"][0]["free"])
            if free < free_before:
                out["slot_drops"].append({"round": i, "free_slots": free})
                free_before = free
        time.sleep(0.5)
        out["free_slots_at_end"] = int(lab.node_view()["workers"][0]["free"])
        out["parks_redirected"] = int(node.metric("callpark_parks_total", result="redirected"))
        out["parks_no_slot"] = int(node.metric("callpark_parks_total", result="no-slot"))
        out["retrievals_ok"] = int(node.metric("callpark_retrievals_total", result="ok"))
        out["retrieve_histogram_count"] = int(node.metric("callpark_retrieve_latency_seconds_count"))
        out["parked_records_left"] = lab.parked_count()
    finally:
        out["problems"] = lab.close()
        shutil.rmtree(root, ignore_errors=True)
    return out


def ghost(churn_calls: int = 10) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="callpark-repro-"))
    lab = BenchLab(root)
    out: dict[str, Any] = {}
    try:
        lab.start_etcd()
        node = lab.start_node(1)
        churn, holder = lab.phone("churn"), lab.phone("holder")

        def one(uri: str) -> int:
            since = churn.mark()
            call = churn.call(uri)
            final = churn.wait_event(is_state(call, "CONFIRMED", "DISCONNECTED"), since=since, timeout=5)
            if final["state"] == "CONFIRMED":
                churn.hangup(call)
            churn.wait_event(is_state(call, "DISCONNECTED"), since=since, timeout=5)
            time.sleep(0.1)
            return int(final.get("code") or 0)

        out["churn_parks (codes)"] = [one(node.park_uri()) for _ in range(churn_calls)]
        held_since = holder.mark()
        for _ in range(3):
            since = holder.mark()
            call = holder.call(node.park_uri())
            holder.wait_event(is_state(call, "CONFIRMED"), since=since, timeout=5)
        out["parked_before"] = lab.parked_count()
        out["churn_404s (codes)"] = [one(node.orbit_uri("7999")) for _ in range(churn_calls)]
        time.sleep(1.0)
        ended = [e for e in holder.events("call_state", since=held_since) if e.get("state") == "DISCONNECTED"]
        out["parked_callers_still_connected"] = sum(1 for c in holder.calls() if c.get("state") == "CONFIRMED")
        out["parked_callers_hung_up_by_node"] = [f"{e['call']}: {e.get('code')} {e.get('reason')}" for e in ended]
        out["records_still_parked_in_etcd"] = lab.parked_count()
        out["node_free_slots"] = int(lab.node_view()["workers"][0]["free"])
    finally:
        out["problems"] = lab.close()
        shutil.rmtree(root, ignore_errors=True)
    return out


def _invite(sock: socket.socket, host: str, port: int, i: int) -> None:
    me = sock.getsockname()[1]
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {40000 + 2 * (i % 1000)} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    msg = (
        f"INVITE sip:nobody@{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOOPBACK}:{me};rport;branch=z9hG4bK-repro-{i}-{time.time_ns()}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:repro@{LOOPBACK}>;tag=r{i}\r\nTo: <sip:nobody@{LOOPBACK}>\r\n"
        f"Call-ID: repro-{i}-{time.time_ns()}@bench\r\nCSeq: 1 INVITE\r\nContact: <sip:repro@{LOOPBACK}:{me}>\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
    )
    sock.sendto(msg.encode(), (host, port))


def burst(count: int, gap_s: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="callpark-repro-"))
    lab = BenchLab(root)
    out: dict[str, Any] = {"count": count, "gap_s": gap_s}
    try:
        lab.start_etcd()
        node = lab.start_node(1)
        host, port_text = node.worker_sip(0).split(":")
        pid_before = lab.node_pids()[1][0]
        answers: dict[str, int] = {}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOOPBACK, 0))
            sock.settimeout(0.2)
            began = time.monotonic()
            for i in range(count):
                _invite(sock, host, int(port_text), i)
                time.sleep(gap_s)
            out["sent_in_s"] = round(time.monotonic() - began, 3)
            until = time.monotonic() + 1.5
            while time.monotonic() < until:
                try:
                    line = sock.recv(65535).decode(errors="replace").split("\r\n", 1)[0]
                except TimeoutError:
                    continue
                answers[line] = answers.get(line, 0) + 1
        out["answers_seen (incl. retransmissions)"] = answers
        time.sleep(1.0)
        out["worker_restarts"] = int(node.metric("callpark_worker_restarts_total"))
        pids = lab.node_pids()[1]
        out["worker_pid_changed"] = bool(pids) and pids[0] != pid_before
        log_tail = (root / "node" / "worker0.log").read_text(errors="replace")[-300:]
        out["worker_log_tail"] = log_tail.strip().splitlines()[-1:] if log_tail.strip() else []
    finally:
        out["problems"] = lab.close()
        shutil.rmtree(root, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.repro", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("callgc", help="worker slot leak / killed calls after pjsua call-id reuse")
    c.add_argument("--rounds", type=int, default=60)
    sub.add_parser("ghost", help="parked callers hung up by the same defect; etcd keeps their records")
    b = sub.add_parser("burst", help="worker abort on an INVITE burst (ioqueue exhaustion)")
    b.add_argument("--count", type=int, default=40)
    b.add_argument("--gap", type=float, default=0.001, help="seconds between INVITEs")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.what == "callgc":
        result = callgc(args.rounds)
    elif args.what == "ghost":
        result = ghost()
    else:
        result = burst(args.count, args.gap)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
