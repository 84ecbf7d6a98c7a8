"""The local lab: ``etcd``, ``up`` / ``down``, ``demo``, ``drill`` and ``phone``.

Everything here runs on loopback with ephemeral ports and stops what it started by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from callpark import deployment
from callpark.cli.common import Subparsers, command
from callpark.errors import CallparkError, NotFound, ValidationError
from callpark.lab import demo, drill
from callpark.lab.etcd import LocalEtcdCluster
from callpark.lab.localcluster import LocalCluster
from callpark.netutil import free_port, free_port_block
from callpark.procs import pid_alive
from callpark.store.kv import KV
from callpark.store.ownership import read_snapshot
from callpark.waiting import WaitTimeout, wait_until

UP_READY_MARKER = "Ctrl-C stops everything."  # the last line ``callpark up`` prints once running


def _run_dir(option: str | None, prefix: str) -> Path:
    return Path(option) if option else Path(tempfile.mkdtemp(prefix=prefix))


def cmd_etcd(args: argparse.Namespace) -> int:
    """Run a local etcd cluster in the foreground until Ctrl-C (for people and scripts)."""
    with LocalEtcdCluster(_run_dir(args.dir, "callpark-etcd-"), members=args.members) as cluster:
        print(f"CALLPARK_ETCD={cluster.endpoints}", flush=True)
        try:
            while all(m.is_running() for m in cluster.members):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The README's main job: park and retrieve real calls on the embedded default cluster."""
    dep = deployment.load(Path(args.config))
    return demo.run(dep, sys.stdout, Path(args.run_dir) if args.run_dir else None)


def cmd_drill(args: argparse.Namespace) -> int:
    """The failover drill on the embedded default cluster (the README's main job)."""
    dep = deployment.load(Path(args.config))
    if args.calls < 1 or args.calls > 12:
        raise ValidationError("drill-calls", f"--calls must be 1 to 12 on a local cluster, not {args.calls}")
    code = 0
    for i in range(args.repeat):
        if args.repeat > 1:
            print(f"\n######## drill {i + 1} of {args.repeat}", flush=True)
        code |= drill.run(
            dep,
            sys.stdout,
            fault=args.fault,
            calls=args.calls,
            run_dir=Path(args.run_dir) / f"drill-{i + 1}" if args.run_dir else None,
            json_path=Path(args.json) if args.json and args.repeat == 1 else None,
        )
    return code


def cmd_phone(args: argparse.Namespace) -> int:
    """A pjsua2 softphone driven by JSON lines on stdin (see callpark/lab/phone/protocol.py)."""
    # Imported here on purpose: it loads the pjsua2 native library, which no other command needs.
    from callpark.lab.phone.child import main as phone_main

    argv = ["--user", args.user, "--sip-port", str(args.sip_port or free_port(udp_too=True))]
    argv += ["--rtp-port", str(args.rtp_port or free_port_block(14))]
    if args.edge:
        argv += ["--registrar", args.edge, "--proxy", args.edge, "--register"]
    if args.auto_answer:
        argv.append("--auto-answer")
    return int(phone_main(argv + list(args.rest)))


# -- up / down -----------------------------------------------------------------------------


def _up_state(args: argparse.Namespace) -> Path:
    return Path(args.state) if args.state else Path(tempfile.gettempdir()) / f"callpark-up-{os.getuid()}.json"


def cmd_up(args: argparse.Namespace) -> int:
    """Run the embedded default cluster in the foreground with a live status view; Ctrl-C stops it."""
    if args.detach:
        return _up_detached(args)
    dep = deployment.load(Path(args.config))
    run_dir = _run_dir(args.run_dir, "callpark-up-")
    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"starting {dep.path.name} in {run_dir} ...", flush=True)
    with LocalCluster(dep, run_dir) as cluster:
        _print_cluster(dep, cluster)
        print(UP_READY_MARKER, flush=True)
        assert cluster.store is not None
        while not stop:
            print(_status_line(cluster.store), flush=True)
            for _ in range(int(args.interval * 10)):
                if stop:
                    break
                time.sleep(0.1)
    print("stopped", flush=True)
    return 0


def _print_cluster(dep: deployment.Deployment, cluster: LocalCluster) -> None:
    """Where to reach what ``up`` started: etcd settings, the edge, nodes and controllers."""
    for name, value in cluster.access.env().items():  # CALLPARK_ETCD, and in secure mode the TLS/user ones
        print(f"{name}={value}")
    print(f"SIP edge: {cluster.edge_address} (park URI sip:park@127.0.0.1, orbits sip:<orbit>@127.0.0.1)")
    sec = dep.sip_security
    auth = f"on (realm {sec.digest.realm}, {len(sec.digest.users)} users)" if sec.digest else "off"
    print(f"SIP security: edge trusts {','.join(sec.trusted_peers)}; digest auth {auth}")
    for node in cluster.all_nodes():
        workers = [w["sip"] for w in node.info["workers"]]
        print(f"node {node.name}: http://127.0.0.1:{node.http_port}/metrics, workers {workers}")
    for c in cluster.controllers:
        print(f"controller {c.name}: http://127.0.0.1:{c.info['http']}/metrics")


def _status_line(kv: KV) -> str:
    snap = read_snapshot(kv)
    pools = ", ".join(
        f"{p} {'up' if snap.ready_members(p) else 'DOWN'} ({len(snap.ready_members(p))} ready, "
        f"owns {','.join(snap.ranges_owned_by(p)) or '-'})"
        for p in sorted(snap.config.pools)
    )
    leader = (snap.leader or {}).get("name", "none")
    return f"{time.strftime('%H:%M:%S')} leader {leader}; {pools}; {len(snap.parked)} parked"


def _up_detached(args: argparse.Namespace) -> int:
    """Start ``callpark up`` in the background; ``callpark down`` stops it."""
    state = _up_state(args)
    if state.exists():
        old = json.loads(state.read_text())
        if pid_alive(int(old.get("pid", 0))):
            raise CallparkError(
                f"a local cluster is already running (pid {old['pid']}, {old['run_dir']}); 'callpark down' first"
            )
    run_dir = _run_dir(args.run_dir, "callpark-up-")
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "up.log"
    argv = [sys.executable, "-m", "callpark.cli", "up", "--config", args.config, "--run-dir", str(run_dir)]
    argv += ["--interval", str(args.interval)]
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True
        )
    state.write_text(json.dumps({"pid": proc.pid, "run_dir": str(run_dir), "log": str(log_path)}))
    with contextlib.suppress(WaitTimeout):
        wait_until(
            lambda: proc.poll() is not None or UP_READY_MARKER in log_path.read_text(errors="replace"),
            timeout=120,
            what="the local cluster to start",
        )
    text = log_path.read_text(errors="replace")
    if UP_READY_MARKER not in text:
        proc.kill()
        proc.wait()
        state.unlink(missing_ok=True)
        tail = "; ".join(text.strip().splitlines()[-3:])
        raise CallparkError(f"the local cluster did not start (log {log_path}): {tail}")
    print(text.split(UP_READY_MARKER)[0].rstrip())
    print(f"running in the background (pid {proc.pid}, log {log_path}); 'callpark down' stops it")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the cluster ``callpark up --detach`` started, by its PID."""
    state = _up_state(args)
    if not state.exists():
        raise NotFound(f"no detached local cluster (no {state})")
    info = json.loads(state.read_text())
    pid = int(info["pid"])
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
    state.unlink(missing_ok=True)
    print(f"stopped the local cluster (pid {pid}, {info['run_dir']})")
    return 0


# -- parsers -------------------------------------------------------------------------------


def add_phone_parser(sub: Subparsers) -> None:
    """``phone``."""
    p = command(sub, "phone", cmd_phone, "a pjsua2 softphone driven by JSON lines on stdin (for people and tests)")
    p.add_argument("--user", required=True)
    p.add_argument("--edge", help="host:port of the SIP edge: register there and send through it")
    p.add_argument("--sip-port", type=int)
    p.add_argument("--rtp-port", type=int)
    p.add_argument("--auto-answer", action="store_true")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="more options of python -m callpark.lab.phone")


def add_parsers(sub: Subparsers) -> None:
    """``etcd``, ``up``, ``down`` and ``drill`` (``phone`` and ``demo`` have their own, to keep the
    order of ``callpark --help``)."""
    p = command(sub, "etcd", cmd_etcd, "run a local etcd cluster on loopback until Ctrl-C")
    p.add_argument("--members", type=int, default=1)
    p.add_argument("--dir", help="data directory (default: a new temporary one)")
    _add_up_down(sub)
    p = command(sub, "drill", cmd_drill, "failover drill on the local default cluster: park, fault, verify, failback")
    p.add_argument("--config", default=str(deployment.DEFAULT_LOCAL_FILE))
    p.add_argument("--fault", default="pool-kill", choices=list(drill.FAULTS))
    p.add_argument("--calls", type=int, default=4, help="calls parked before the fault (1-12)")
    p.add_argument("--repeat", type=int, default=1, help="run the drill this many times")
    p.add_argument("--json", help="write the JSON report here (default: drill.json in the run dir)")
    p.add_argument("--run-dir", help="keep logs here (default: a new temporary dir)")


def add_demo_parser(sub: Subparsers) -> None:
    """``demo`` (listed last in ``callpark --help``)."""
    p = command(sub, "demo", cmd_demo, "park and retrieve real calls on the local default cluster, then stop")
    p.add_argument("--config", default=str(deployment.DEFAULT_LOCAL_FILE))
    p.add_argument("--run-dir", help="keep logs here (default: a new temporary dir)")


def _add_up_down(sub: Subparsers) -> None:
    p = command(sub, "up", cmd_up, "run the local default cluster in the foreground (Ctrl-C stops it)")
    p.add_argument("--config", default=str(deployment.DEFAULT_LOCAL_FILE))
    p.add_argument("--run-dir", help="keep logs here (default: a new temporary dir)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between status lines")
    p.add_argument("--detach", action="store_true", help="run in the background; 'callpark down' stops it")
    p.add_argument("--state", help="where --detach records the background cluster (default: in the temp dir)")
    p = command(sub, "down", cmd_down, "stop the cluster started with 'callpark up --detach'")
    p.add_argument("--state", help="the state file given to 'up --detach --state'")
