"""The ``callpark`` command line: admin commands mirroring the Lync cmdlets, and more.

Exit status: 0 success, 1 a rule was broken or something named does not exist,
2 bad usage, 3 etcd unreachable or its data malformed. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from callpark import __version__, admintoken, tables
from callpark.errors import CallparkError, NotFound, StoreError, ValidationError
from callpark.model.orbits import OrbitRange, RangeType
from callpark.model.pools import FailbackPolicy
from callpark.model.settings import GLOBAL_SCOPE, parse_scope
from callpark.store import access as etcdaccess
from callpark.store import admin

log = logging.getLogger("callpark.cli")

EXIT_RULE = 1
EXIT_USAGE = 2
EXIT_STORE = 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"callpark: error: {message} (see '{self.prog} --help')\n")


def _store(args: argparse.Namespace) -> admin.AdminStore:
    from callpark.store.etcd import EtcdStore

    return admin.AdminStore(EtcdStore.connect(args.etcd))


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


# -- orbit ---------------------------------------------------------------------------------


def cmd_orbit_new(args: argparse.Namespace) -> int:
    rng = OrbitRange(args.name, args.start, args.end, args.pool, RangeType.parse(args.type))
    _store(args).change(lambda s: admin.new_range(s, rng))
    print(f"created range {rng.name!r}: {rng.start}-{rng.end} ({rng.size} orbits, {rng.type.value}) on {rng.pool}")
    return 0


def cmd_orbit_set(args: argparse.Namespace) -> int:
    type_ = RangeType.parse(args.type) if args.type else None
    state = _store(args).change(
        lambda s: admin.set_range(s, args.name, start=args.start, end=args.end, pool=args.pool, type_=type_)
    )
    r = state.ranges[args.name]
    print(f"updated range {r.name!r}: {r.start}-{r.end} ({r.size} orbits, {r.type.value}) on {r.pool}")
    return 0


def cmd_orbit_get(args: argparse.Namespace) -> int:
    state = _store(args).state()
    ranges = sorted(state.ranges.values(), key=lambda r: r.name)
    if args.name:
        if args.name not in state.ranges:
            raise NotFound(f"range {args.name!r} does not exist")
        ranges = [state.ranges[args.name]]
    if args.filter:
        ranges = [r for r in ranges if fnmatch.fnmatchcase(r.name, args.filter)]
    if args.type:
        wanted = RangeType.parse(args.type)
        ranges = [r for r in ranges if r.type == wanted]
    if args.json:
        _print_json([r.to_json() | {"size": r.size} for r in ranges])
    else:
        print(
            tables.render(
                ["NAME", "START", "END", "SIZE", "TYPE", "POOL"],
                [(r.name, r.start, r.end, r.size, r.type.value, r.pool) for r in ranges],
            )
        )
    return 0


def cmd_orbit_remove(args: argparse.Namespace) -> int:
    _store(args).change(lambda s: admin.remove_range(s, args.name))
    print(f"removed range {args.name!r}")
    return 0


# -- pool ----------------------------------------------------------------------------------


def cmd_pool_new(args: argparse.Namespace) -> int:
    failback = FailbackPolicy.parse(args.failback)
    _store(args).change(lambda s: admin.new_pool(s, args.name, args.site, args.backup, failback, args.hold_down))
    paired = f", paired with {args.backup}" if args.backup else ""
    print(f"created pool {args.name!r} at site {args.site!r}{paired}")
    return 0


def cmd_pool_set(args: argparse.Namespace) -> int:
    backup: Any = admin.UNSET
    if args.no_backup:
        backup = None
    elif args.backup is not None:
        backup = args.backup
    failback = FailbackPolicy.parse(args.failback) if args.failback else None
    state = _store(args).change(
        lambda s: admin.set_pool(
            s, args.name, site=args.site, backup=backup, failback=failback, failback_hold_down_s=args.hold_down
        )
    )
    p = state.pools[args.name]
    print(f"updated pool {p.name!r}: site {p.site}, backup {p.backup or '-'}, failback {p.failback.value}")
    return 0


def cmd_pool_get(args: argparse.Namespace) -> int:
    state = _store(args).state()
    pools = sorted(state.pools.values(), key=lambda p: p.name)
    if args.name:
        if args.name not in state.pools:
            raise NotFound(f"pool {args.name!r} does not exist")
        pools = [state.pools[args.name]]
    if args.json:
        _print_json([p.to_json() for p in pools])
    else:
        print(
            tables.render(
                ["POOL", "SITE", "BACKUP", "FAILBACK", "HOLD-DOWN", "RANGES"],
                [
                    (
                        p.name,
                        p.site,
                        p.backup or "-",
                        p.failback.value,
                        f"{p.failback_hold_down_s}s",
                        ",".join(r.name for r in state.ranges_of(p.name)) or "-",
                    )
                    for p in pools
                ],
            )
        )
    return 0


def cmd_pool_remove(args: argparse.Namespace) -> int:
    _store(args).change(lambda s: admin.remove_pool(s, args.name))
    print(f"removed pool {args.name!r}")
    return 0


# -- cps -----------------------------------------------------------------------------------


def _cps_changes(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.call_pickup_timeout_threshold is not None:
        changes["CallPickupTimeoutThreshold"] = args.call_pickup_timeout_threshold
    if args.enable_music_on_hold is not None:
        changes["EnableMusicOnHold"] = args.enable_music_on_hold
    if args.max_call_pickup_attempts is not None:
        changes["MaxCallPickupAttempts"] = args.max_call_pickup_attempts
    if args.on_timeout_uri is not None:
        changes["OnTimeoutURI"] = args.on_timeout_uri
    return changes


def _print_settings(rows: Sequence[tuple[str, Any]], as_json: bool) -> None:
    if as_json:
        _print_json({scope: s.to_json() for scope, s in rows})
        return
    print(
        tables.render(
            ["SCOPE", "CallPickupTimeoutThreshold", "EnableMusicOnHold", "MaxCallPickupAttempts", "OnTimeoutURI"],
            [
                (
                    scope,
                    s.to_json()["CallPickupTimeoutThreshold"],
                    s.enable_music_on_hold,
                    s.max_call_pickup_attempts,
                    s.on_timeout_uri or "-",
                )
                for scope, s in rows
            ],
        )
    )


def cmd_cps_new(args: argparse.Namespace) -> int:
    state = _store(args).change(lambda s: admin.cps_new(s, args.identity, _cps_changes(args)))
    scope = parse_scope(args.identity)
    _print_settings([(scope, state.settings(scope))], args.json)
    return 0


def cmd_cps_set(args: argparse.Namespace) -> int:
    changes = _cps_changes(args)
    if not changes:
        raise ValidationError("cps-field", "nothing to change: give at least one setting")
    state = _store(args).change(lambda s: admin.cps_set(s, args.identity, changes))
    scope = parse_scope(args.identity)
    _print_settings([(scope, state.settings(scope))], args.json)
    return 0


def cmd_cps_get(args: argparse.Namespace) -> int:
    state = _store(args).state()
    if args.identity:
        scope = parse_scope(args.identity)
        rows = [(scope, state.settings(scope))]
    else:
        rows = [(GLOBAL_SCOPE, state.settings(GLOBAL_SCOPE))]
        rows += [(s, v) for s, v in sorted(state.cps.items()) if s != GLOBAL_SCOPE]
    _print_settings(rows, args.json)
    return 0


def cmd_cps_remove(args: argparse.Namespace) -> int:
    scope = parse_scope(args.identity)
    _store(args).change(lambda s: admin.cps_remove(s, scope))
    print("reset global settings to the defaults" if scope == GLOBAL_SCOPE else f"removed settings {scope!r}")
    return 0


def cmd_cps_effective(args: argparse.Namespace) -> int:
    scope, settings = _store(args).state().effective(args.pool)
    if args.json:
        _print_json({"pool": args.pool, "scope": scope, **settings.to_json()})
    else:
        _print_settings([(f"{args.pool} (from {scope})", settings)], False)
    return 0


# -- moh -----------------------------------------------------------------------------------


def cmd_moh_set(args: argparse.Namespace) -> int:
    from callpark.store import music as mohstore

    data = mohstore.read_music_file(Path(args.file))
    meta = mohstore.upload(_store(args), args.pool, data, Path(args.file).name)
    print(
        f"music on hold for {args.pool}: {meta.filename} ({meta.size} bytes, {meta.sample_rate} Hz, "
        f"{meta.duration_s:.1f} s, {meta.chunks} chunk(s), sha256 {meta.sha256[:12]})"
    )
    return 0


def cmd_moh_get(args: argparse.Namespace) -> int:
    from callpark.store import music as mohstore

    store = _store(args)
    if args.pool not in store.state().pools:
        raise NotFound(f"pool {args.pool!r} does not exist")
    meta, data = mohstore.fetch(store, args.pool)
    if args.output:
        Path(args.output).write_bytes(data)
    info = meta.to_json() if meta else {"pool": args.pool, "source": "default", "size": len(data)}
    if args.json:
        _print_json(info)
    else:
        print(
            f"{args.pool}: "
            + (f"{meta.filename}, {meta.size} bytes, {meta.sample_rate} Hz, {meta.duration_s:.1f} s" if meta else "")
            + ("default music" if meta is None else "")
            + (f" (written to {args.output})" if args.output else "")
        )
    return 0


def cmd_moh_reset(args: argparse.Namespace) -> int:
    from callpark.store import music as mohstore

    mohstore.reset(_store(args), args.pool)
    print(f"music on hold for {args.pool}: back to the default music")
    return 0


# -- status, config, local etcd, demo ------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from callpark import status
    from callpark.store.etcd import EtcdStore

    store = EtcdStore.connect(args.etcd)
    view = status.collect(store, admin.AdminStore(store))
    if args.json:
        _print_json(view)
    else:
        print(status.render(view))
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from callpark import deployment

    dep = deployment.load(Path(args.file))
    for source in dep.music.values():
        if source is not None:
            from callpark.model.music import validate_wav
            from callpark.store import music as mohstore

            validate_wav(mohstore.read_music_file(source))
    print(
        f"{args.file}: ok ({len(dep.state.pools)} pools, {len(dep.state.ranges)} ranges, "
        f"{len(dep.state.cps)} settings scopes)"
    )
    return 0


def cmd_config_apply(args: argparse.Namespace) -> int:
    from callpark import deployment

    dep = deployment.load(Path(args.file))
    args.etcd = args.etcd.fill_from(dep.etcd.access())  # the file's [etcd] fills what options/env left out
    deployment.apply(_store(args), dep)
    print(f"applied {args.file}")
    return 0


def cmd_etcd(args: argparse.Namespace) -> int:
    """Run a local etcd cluster in the foreground until Ctrl-C (for people and scripts)."""
    from callpark.lab.etcd import LocalEtcdCluster

    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="callpark-etcd-"))
    with LocalEtcdCluster(base, members=args.members) as cluster:
        print(f"CALLPARK_ETCD={cluster.endpoints}", flush=True)
        try:
            while all(m.is_running() for m in cluster.members):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The README's main job: park and retrieve real calls on the embedded default cluster."""
    from callpark import deployment
    from callpark.lab import demo

    dep = deployment.load(Path(args.config))
    return demo.run(dep, sys.stdout, Path(args.run_dir) if args.run_dir else None)


def _up_state(args: argparse.Namespace) -> Path:
    return Path(args.state) if args.state else Path(tempfile.gettempdir()) / f"callpark-up-{os.getuid()}.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def cmd_up_detached(args: argparse.Namespace) -> int:
    """Start ``callpark up`` in the background; ``callpark down`` stops it."""
    import subprocess

    from callpark.waiting import WaitTimeout, wait_until

    state = _up_state(args)
    if state.exists():
        old = json.loads(state.read_text())
        if _alive(int(old.get("pid", 0))):
            raise CallparkError(
                f"a local cluster is already running (pid {old['pid']}, {old['run_dir']}); 'callpark down' first"
            )
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="callpark-up-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "up.log"
    argv = [sys.executable, "-m", "callpark.cli", "up", "--config", args.config, "--run-dir", str(run_dir)]
    argv += ["--interval", str(args.interval)]
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True
        )
    state.write_text(json.dumps({"pid": proc.pid, "run_dir": str(run_dir), "log": str(log_path)}))
    marker = "Ctrl-C stops everything."
    with contextlib.suppress(WaitTimeout):
        wait_until(
            lambda: proc.poll() is not None or marker in log_path.read_text(errors="replace"),
            timeout=120,
            what="the local cluster to start",
        )
    text = log_path.read_text(errors="replace")
    if marker not in text:
        proc.kill()
        proc.wait()
        state.unlink(missing_ok=True)
        tail = "; ".join(text.strip().splitlines()[-3:])
        raise CallparkError(f"the local cluster did not start (log {log_path}): {tail}")
    print(text.split(marker)[0].rstrip())
    print(f"running in the background (pid {proc.pid}, log {log_path}); 'callpark down' stops it")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the cluster ``callpark up --detach`` started, by its PID."""
    state = _up_state(args)
    if not state.exists():
        raise NotFound(f"no detached local cluster (no {state})")
    info = json.loads(state.read_text())
    pid = int(info["pid"])
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    state.unlink(missing_ok=True)
    print(f"stopped the local cluster (pid {pid}, {info['run_dir']})")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Run the embedded default cluster in the foreground with a live status view; Ctrl-C stops it."""
    if args.detach:
        return cmd_up_detached(args)

    from callpark import deployment
    from callpark.lab.localcluster import LocalCluster
    from callpark.store.ownership import read_snapshot

    dep = deployment.load(Path(args.config))
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="callpark-up-"))
    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"starting {dep.path.name} in {run_dir} ...", flush=True)
    with LocalCluster(dep, run_dir) as cluster:
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
        print("Ctrl-C stops everything.", flush=True)
        assert cluster.store is not None
        while not stop:
            snap = read_snapshot(cluster.store)
            pools = ", ".join(
                f"{p} {'up' if snap.ready_members(p) else 'DOWN'} ({len(snap.ready_members(p))} ready, "
                f"owns {','.join(snap.ranges_owned_by(p)) or '-'})"
                for p in sorted(snap.config.pools)
            )
            leader = (snap.leader or {}).get("name", "none")
            print(f"{time.strftime('%H:%M:%S')} leader {leader}; {pools}; {len(snap.parked)} parked", flush=True)
            for _ in range(int(args.interval * 10)):
                if stop:
                    break
                time.sleep(0.1)
    print("stopped", flush=True)
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    """The failover drill on the embedded default cluster (the README's main job)."""
    from callpark import deployment
    from callpark.lab import drill

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


def cmd_chaos_run(args: argparse.Namespace) -> int:
    """One chaos scenario (inside a private network namespace when this machine allows it)."""
    import tempfile

    from callpark.chaos import netns, runner, scenarios

    try:
        scenarios.nemeses_of(args.scenario)
    except ValueError as exc:
        raise ValidationError("chaos-scenario", str(exc)) from None
    if args.duration < 0 or args.duration > 86400:
        raise ValidationError("chaos-duration", f"--duration must be 0 to 86400 seconds, not {args.duration}")
    if not 1 <= args.pairs <= 6:
        raise ValidationError("chaos-pairs", f"--pairs must be 1 to 6, not {args.pairs}")
    if not 0 < args.rate <= 20:
        raise ValidationError("chaos-rate", f"--rate must be above 0 and at most 20 parks/s, not {args.rate}")
    if args.window < 0 or args.window > 600:
        raise ValidationError("chaos-window", f"--window must be 0 to 600 seconds, not {args.window}")
    out = Path(args.out or tempfile.mkdtemp(prefix=f"callpark-chaos-{args.scenario}-{args.seed}-")).resolve()
    if not netns.inside():
        try:
            netns.check_available()
        except netns.NetnsUnavailable as exc:
            if runner.needs_netns(args.scenario):
                raise ValidationError("chaos-netns", f"scenario {args.scenario}: {exc}") from None
        else:
            argv = ["-v"] * args.verbose + ["chaos", "run", "--scenario", args.scenario, "--seed", str(args.seed)]
            argv += ["--duration", str(args.duration), "--out", str(out), "--pairs", str(args.pairs)]
            argv += ["--rate", str(args.rate), "--window", str(args.window)]
            netns.reexec(argv)
    cfg = runner.RunConfig(
        scenario=args.scenario,
        seed=args.seed,
        duration_s=args.duration,
        out=out,
        pairs=args.pairs,
        rate=args.rate,
        window_s=args.window,
    )
    return runner.run(cfg)


def cmd_chaos_list(args: argparse.Namespace) -> int:
    from callpark.chaos import scenarios

    print(tables.render(["SCENARIO", "WHAT"], scenarios.catalogue()))
    return 0


def cmd_chaos_smoke(args: argparse.Namespace) -> int:
    """Every smoke scenario with its fixed seed, one process each; a table of all of them."""
    import subprocess
    import tempfile

    from callpark.chaos import scenarios

    parent = Path(args.out or tempfile.mkdtemp(prefix="callpark-chaos-smoke-")).resolve()
    rows, code = [], 0
    for scenario, seed in scenarios.SMOKE:
        out = parent / f"{scenario}-{seed}"
        argv = [sys.executable, "-m", "callpark.cli", "chaos", "run", "--scenario", scenario, "--seed", str(seed)]
        rc = subprocess.run([*argv, "--out", str(out)], check=False).returncode
        code |= rc
        try:
            v = json.loads((out / "verdict.json").read_text())
            n = v.get("numbers", {})
            ops = f"{n.get('operations_ok', 0):.0f}/{n.get('operations', 0):.0f}"
            rto = f"{n['worst_rto_s']:.2f} s" if n.get("worst_rto_s") else "-"
            rows.append((scenario, str(seed), f"{n.get('faults', 0):.0f}", ops, f"{n.get('calls_lost', 0):.0f}", rto,
                         "PASS" if rc == 0 else "FAIL"))  # fmt: skip
        except (OSError, ValueError, KeyError):
            rows.append((scenario, str(seed), "-", "-", "-", "-", f"FAIL (exit {rc})"))
    print()
    print(tables.render(["SCENARIO", "SEED", "FAULTS", "OPERATIONS", "CALLS LOST", "WORST RTO", "VERDICT"], rows))
    print(f"runs in {parent}")
    return 1 if code else 0


def cmd_parked_list(args: argparse.Namespace) -> int:
    """Every parked call in the cluster, from etcd (any node's view is the same)."""
    from callpark.store.etcd import EtcdStore
    from callpark.store.parking import ParkTable
    from callpark.store.schema import Keys

    store = EtcdStore.connect(args.etcd)
    try:
        table = ParkTable(store, node="cli", pool="-", member_key=Keys.MEMBERS + "-")
        calls = sorted((h.call for h in table.all_parked()), key=lambda c: c.orbit)
    finally:
        store.close()
    now = time.time()
    rows: list[dict[str, Any]] = [c.summary(now) for c in calls]
    if args.json:
        _print_json(rows)
    else:
        print(
            tables.render(
                ["ORBIT", "CALLER", "PARKER", "PARKED FOR", "NEXT RINGBACK", "RINGBACKS", "STATE", "HOLDER"],
                [
                    (
                        r["orbit"],
                        r["caller"],
                        r["parker"] or "-",
                        f"{r['parked_for_s']:.0f}s",
                        f"in {max(0.0, r['next_ringback_in_s']):.0f}s",
                        r["ringbacks"],
                        r["state"],
                        r["holder"],
                    )
                    for r in rows
                ],
                empty="(no parked calls)",
            )
        )
    return 0


def cmd_phone(args: argparse.Namespace) -> int:
    """A pjsua2 softphone driven by JSON lines on stdin (see callpark/phone/protocol.py)."""
    from callpark.lab.phone.child import main as phone_main
    from callpark.netutil import free_port, free_port_block

    argv = ["--user", args.user, "--sip-port", str(args.sip_port or free_port(udp_too=True))]
    argv += ["--rtp-port", str(args.rtp_port or free_port_block(14))]
    if args.edge:
        argv += ["--registrar", args.edge, "--proxy", args.edge, "--register"]
    if args.auto_answer:
        argv.append("--auto-answer")
    return int(phone_main(argv + list(args.rest)))


def cmd_controller(args: argparse.Namespace) -> int:
    """Run a failover controller until SIGTERM (several may run; one leads)."""
    import threading

    from callpark.dr.adminapi import controller_actions
    from callpark.dr.controller import Controller, ControllerConfig
    from callpark.httpapi import NodeHttp
    from callpark.store.etcd import EtcdStore

    config = ControllerConfig(
        name=args.name,
        loop_s=args.loop,
        grace_s=args.grace,
        ttl_s=args.lease_ttl,
        safety_s=args.safety,
        request_timeout_s=args.etcd_timeout,
    ).validate()
    admin_token = admintoken.from_option(args.admin_token_file)
    store = EtcdStore.connect(args.etcd, request_timeout_s=args.etcd_timeout, retry_deadline_s=args.etcd_timeout)
    controller = Controller(store, config)

    def healthy() -> tuple[bool, str]:
        stalled = time.monotonic() - controller.last_cycle
        return (stalled < config.ttl_s, f"last cycle {stalled:.1f}s ago")

    def ready() -> tuple[bool, str]:
        ok, why = healthy()
        return ok, ("leader" if controller.leadership.is_leader() else "standby") if ok else why

    http = NodeHttp(
        args.http_host,
        args.http_port,
        registry=controller.metrics.registry,
        healthy=healthy,
        ready=ready,
        api={"/api/status": controller.status},
        admin_token=admin_token,
        actions=controller_actions(store),
    )
    http.start()
    signal.signal(signal.SIGTERM, lambda signum, frame: controller.stop())
    signal.signal(signal.SIGINT, lambda signum, frame: controller.stop())
    print(json.dumps({"event": "ready", "name": args.name, "http": http.port}), flush=True)
    thread = threading.Thread(target=controller.run, name="controller", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.5)
    finally:
        http.stop()
        store.close()
    return 0


def _dr_store(args: argparse.Namespace) -> Any:
    from callpark.store.etcd import EtcdStore

    return EtcdStore.connect(args.etcd)


def cmd_dr_status(args: argparse.Namespace) -> int:
    from callpark.store.ownership import events, read_snapshot

    store = _dr_store(args)
    try:
        snap = read_snapshot(store)
        last = events(store, last=args.events)
    finally:
        store.close()
    pools: list[dict[str, Any]] = []
    for name, pool in sorted(snap.config.pools.items()):
        members = snap.members.get(name, [])
        pools.append(
            {
                "pool": name,
                "site": pool.site,
                "backup": pool.backup,
                "up": bool(snap.ready_members(name)),
                "members": [
                    {"node": m.node, "ready": m.ready, "draining": m.draining, "parked": m.info.get("parked", 0)}
                    for m in members
                ],
                "owns": snap.ranges_owned_by(name),
                "failback": pool.failback.value,
            }
        )
    ranges: list[dict[str, Any]] = [
        {
            "range": r,
            "home": rng.pool,
            "owner": snap.owner_of(r),
            "epoch": snap.owners[r].epoch if r in snap.owners else 0,
            "parked": sum(1 for c in snap.parked if c.range == r),
        }
        for r, rng in sorted(snap.config.ranges.items())
    ]
    view = {"revision": snap.revision, "leader": snap.leader, "pools": pools, "ranges": ranges, "events": last}
    if args.json:
        _print_json(view)
        return 0
    leader = snap.leader or {}
    who = f"{leader.get('name', 'none')} (token {leader.get('token', '-')})"
    print(f"controller leader: {who}, etcd revision {snap.revision}")
    print("\nPools")
    print(
        tables.render(
            ["POOL", "SITE", "BACKUP", "UP", "READY NODES", "OWNS", "FAILBACK"],
            [
                (
                    p["pool"],
                    p["site"],
                    p["backup"] or "-",
                    "yes" if p["up"] else "NO",
                    ",".join(m["node"] for m in p["members"] if m["ready"]) or "-",
                    ",".join(p["owns"]) or "-",
                    p["failback"],
                )
                for p in pools
            ],
        )
    )
    print("\nMembers")
    print(
        tables.render(
            ["POOL", "NODE", "READY", "DRAINING", "PARKED"],
            [(p["pool"], m["node"], m["ready"], m["draining"], m["parked"]) for p in pools for m in p["members"]],
            empty="(no live park node)",
        )
    )
    print("\nRanges")
    print(
        tables.render(
            ["RANGE", "HOME", "OWNER", "EPOCH", "PARKED"],
            [(r["range"], r["home"], r["owner"], r["epoch"], r["parked"]) for r in ranges],
        )
    )
    print("\nLast events")
    print(
        tables.render(
            ["AT", "KIND", "POOL", "TO", "RANGES", "PARKED", "WHY"],
            [
                (
                    time.strftime("%H:%M:%S", time.localtime(float(e.get("at", 0)))),
                    e.get("kind"),
                    e.get("pool"),
                    e.get("to", "-"),
                    ",".join(e.get("ranges", [])) or "-",
                    e.get("parked_calls", "-"),
                    e.get("why", ""),
                )
                for e in last
            ],
            empty="(no events)",
        )
    )
    return 0


def _dr_request(args: argparse.Namespace, action: str) -> int:
    from callpark.dr.controller import request
    from callpark.store.kv import Delete
    from callpark.store.ownership import events
    from callpark.store.schema import Keys
    from callpark.waiting import WaitTimeout, wait_until

    store = _dr_store(args)
    try:
        if args.pool not in admin.AdminStore(store).state().pools:
            raise NotFound(f"pool {args.pool!r} does not exist")
        key = request(store, action, args.pool)
        try:
            wait_until(lambda: store.get(key) is None, timeout=args.timeout, what=f"the controller to {action}")
        except WaitTimeout:
            store.txn([], [Delete(key)])
            raise CallparkError(
                f"no controller leader acted on the {action} request within {args.timeout:.0f}s; request withdrawn"
            ) from None
        done = next((e for e in reversed(events(store, last=50)) if e.get("request") == key), None)
    finally:
        store.close()
    if done is None:
        raise CallparkError(f"{action} request was consumed but no event was recorded under {Keys.EVENTS}")
    if done.get("kind") == "refused":
        raise ValidationError("dr-refused", f"{action} of {args.pool} refused: {done.get('why')}")
    print(
        f"{done['kind']}: {', '.join(done.get('ranges', []))} now served by {done.get('to')} "
        f"({done.get('parked_calls', 0)} parked call(s) follow)"
    )
    return 0


def cmd_dr_failover(args: argparse.Namespace) -> int:
    return _dr_request(args, "failover")


def cmd_dr_failback(args: argparse.Namespace) -> int:
    return _dr_request(args, "failback")


def cmd_dr_drain(args: argparse.Namespace) -> int:
    """Move a node's parked calls to its peers live (INVITE/Replaces), so it can be stopped."""
    from callpark.store.kv import Delete, Put
    from callpark.store.parking import ParkTable
    from callpark.store.schema import Keys
    from callpark.waiting import WaitTimeout, wait_until

    if "/" not in args.node:
        raise ValidationError("dr-node", f"--node must be POOL/NODE, not {args.node!r}")
    pool, node = args.node.split("/", 1)
    store = _dr_store(args)
    key = f"{Keys.DRAIN}{pool}/{node}"
    try:
        if args.cancel:
            store.txn([], [Delete(key)])
            print(f"{args.node}: drain cancelled; the node parks again")
            return 0
        if store.get(Keys.member(pool, node)) is None:
            raise NotFound(f"no live park node {args.node}")
        store.txn([], [Put(key, json.dumps({"at": time.time()}).encode())])
        table = ParkTable(store, node="cli", pool=pool, member_key="-")
        # park id -> Call-ID of the dialog the node holds: a call has moved only when a peer
        # holds the record AND its INVITE/Replaces replaced that dialog (stopping the node
        # between the claim and the Replaces would hang the caller up)
        dialogs = {h.call.park_id: h.call.dialog.call_id for h in table.all_parked() if h.call.holder.node == node}

        def remaining() -> int:
            now = {h.call.park_id: h.call for h in table.all_parked()}
            return sum(
                1
                for park_id, call_id in dialogs.items()
                if park_id in now and (now[park_id].holder.node == node or now[park_id].dialog.call_id == call_id)
            )

        try:
            wait_until(lambda: remaining() == 0, timeout=args.timeout, what=f"{args.node} to hand over its calls")
        except WaitTimeout:
            raise CallparkError(
                f"{args.node} still holds {remaining()} of {len(dialogs)} parked call(s) after {args.timeout:.0f}s "
                "(are its peers up with free slots?); it stays draining"
            ) from None
        lost = [p for p in dialogs if (h := table.history(p)) is not None and h.get("outcome") == "lost"]
    finally:
        store.close()
    if lost:
        raise CallparkError(f"{args.node} drained, but {len(lost)} of {len(dialogs)} call(s) could not be moved (lost)")
    moved = f"{len(dialogs)} parked call(s) moved to its peers"
    print(f"{args.node} drained: {moved}; it parks nothing new and can be stopped")
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    """Run a park node (supervisor + pjsua2 workers) in the foreground until SIGTERM."""
    from callpark.node.supervisor import NodeConfig, Supervisor
    from callpark.peers import parse_peers
    from callpark.ratelimit import ScanLimit
    from callpark.store.etcd import EtcdStore
    from callpark.store.session import LeaseTimings

    timings = LeaseTimings(
        ttl_s=args.lease_ttl, keepalive_s=args.keepalive, safety_s=args.safety, request_timeout_s=args.etcd_timeout
    )
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix=f"callpark-{args.name}-"))
    config = NodeConfig(
        pool=args.pool,
        name=args.name,
        run_dir=run_dir,
        workers=args.workers,
        http_port=args.http_port,
        edge=args.edge,
        domain=args.domain,
        ring_time_s=args.ring_time,
        timings=timings,
        worker_log_level=args.worker_log_level,
        host=args.host,
        sip_port_base=args.sip_port_base,
        rtp_port_base=args.rtp_port_base,
        trusted_peers=tuple(str(n) for n in parse_peers(args.trusted_peers, where="--trusted-peers")),
        scan_limit=ScanLimit(burst=args.orbit_scan_burst, per_minute=args.orbit_scan_per_minute),
        admin_token=admintoken.from_option(args.admin_token_file),
    ).validate()
    store = EtcdStore.connect(
        args.etcd,
        request_timeout_s=args.etcd_timeout,
        retry_deadline_s=args.etcd_timeout * 2,
        fail_fast_s=args.keepalive,  # after a time-out, park requests go elsewhere at once
    )
    supervisor = Supervisor(config, store)

    def on_signal(signum: int, frame: Any) -> None:
        supervisor._stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        supervisor.start()
        view = supervisor.node_view()
        assert supervisor.http is not None
        print(json.dumps({"event": "ready", "http": supervisor.http.port, **view}), flush=True)
        supervisor.run()
    finally:
        supervisor.stop()
        store.close()
    return 0


# -- parser --------------------------------------------------------------------------------


def _add_cps_fields(p: argparse.ArgumentParser) -> None:
    p.add_argument("--call-pickup-timeout-threshold", "--timeout", metavar="HH:MM:SS")
    p.add_argument("--enable-music-on-hold", "--music", metavar="true|false")
    p.add_argument("--max-call-pickup-attempts", "--attempts", metavar="N")
    p.add_argument("--on-timeout-uri", metavar="sip:URI|none")
    p.add_argument("--json", action="store_true")


ADMIN_TOKEN_HELP = "file holding the HTTP admin token (or $CALLPARK_ADMIN_TOKEN_FILE); without one the API is read-only"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="callpark", description="Clustered SIP Call Park service (Lync 2013 semantics).")
    parser.add_argument("--version", action="version", version=f"callpark {__version__}")
    parser.add_argument(
        "--etcd",
        metavar="URLS",
        default=None,
        help="comma-separated etcd client URLs (default: $CALLPARK_ETCD or http://127.0.0.1:2379)",
    )
    etcdaccess.add_cli_options(parser)  # --etcd-ca/-cert/-key/-user/-password-file and $CALLPARK_ETCD_*
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def group(name: str, help_: str) -> argparse._SubParsersAction[_Parser]:
        p = sub.add_parser(name, help=help_)
        return p.add_subparsers(dest="action", required=True, parser_class=_Parser)

    def cmd(
        parent: argparse._SubParsersAction[_Parser], name: str, fn: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_)
        p.set_defaults(func=fn)
        return p

    orbit = group("orbit", "orbit ranges (New/Set/Get/Remove-CsCallParkOrbit)")
    p = cmd(orbit, "new", cmd_orbit_new, "create an orbit range")
    p.add_argument("name")
    p.add_argument("--start", required=True, help="NumberRangeStart, e.g. 7000 or *101")
    p.add_argument("--end", required=True, help="NumberRangeEnd, same length and prefix as the start")
    p.add_argument("--pool", required=True, help="the pool hosting the range (CallParkService)")
    p.add_argument("--type", default="CallPark", help="CallPark (default) or GroupPickup")
    p = cmd(orbit, "set", cmd_orbit_set, "change an orbit range (not its name)")
    p.add_argument("name")
    p.add_argument("--start")
    p.add_argument("--end")
    p.add_argument("--pool")
    p.add_argument("--type")
    p = cmd(orbit, "get", cmd_orbit_get, "list orbit ranges")
    p.add_argument("name", nargs="?")
    p.add_argument("--filter", help="wildcard on the name, e.g. 'pool-a*'")
    p.add_argument("--type")
    p.add_argument("--json", action="store_true")
    p = cmd(orbit, "remove", cmd_orbit_remove, "remove an orbit range")
    p.add_argument("name")

    pool = group("pool", "pools and their 1:1 backup pairing")
    p = cmd(pool, "new", cmd_pool_new, "create a pool")
    p.add_argument("name")
    p.add_argument("--site", required=True)
    p.add_argument("--backup", help="pair with this pool (reciprocal)")
    p.add_argument("--failback", default="manual", help="auto or manual (default)")
    p.add_argument("--hold-down", type=int, metavar="SECONDS", help="healthy time before automatic failback")
    p = cmd(pool, "set", cmd_pool_set, "change a pool")
    p.add_argument("name")
    p.add_argument("--site")
    pair = p.add_mutually_exclusive_group()
    pair.add_argument("--backup")
    pair.add_argument("--no-backup", action="store_true", help="unpair (both sides)")
    p.add_argument("--failback")
    p.add_argument("--hold-down", type=int, metavar="SECONDS")
    p = cmd(pool, "get", cmd_pool_get, "list pools")
    p.add_argument("name", nargs="?")
    p.add_argument("--json", action="store_true")
    p = cmd(pool, "remove", cmd_pool_remove, "remove a pool that owns no range")
    p.add_argument("name")

    cps = group("cps", "Call Park settings (New/Set/Get/Remove-CsCpsConfiguration)")
    p = cmd(cps, "new", cmd_cps_new, "create site settings")
    p.add_argument("--identity", required=True, help="site:<name>")
    _add_cps_fields(p)
    p = cmd(cps, "set", cmd_cps_set, "change settings")
    p.add_argument("--identity", default="global", help="global (default) or site:<name>")
    _add_cps_fields(p)
    p = cmd(cps, "get", cmd_cps_get, "show settings")
    p.add_argument("--identity")
    p.add_argument("--json", action="store_true")
    p = cmd(cps, "remove", cmd_cps_remove, "remove site settings, or reset global ones")
    p.add_argument("--identity", required=True)
    p = cmd(cps, "effective", cmd_cps_effective, "the settings in force for a pool")
    p.add_argument("--pool", required=True)
    p.add_argument("--json", action="store_true")

    moh = group("moh", "music on hold per pool (Set-CsCallParkServiceMusicOnHoldFile)")
    p = cmd(moh, "set", cmd_moh_set, "upload a PCM WAV (16-bit mono, 8-48 kHz, at most 8 MiB)")
    p.add_argument("--pool", required=True)
    p.add_argument("file")
    p = cmd(moh, "get", cmd_moh_get, "show (or save with --output) a pool's music")
    p.add_argument("--pool", required=True)
    p.add_argument("--output", metavar="FILE")
    p.add_argument("--json", action="store_true")
    p = cmd(moh, "reset", cmd_moh_reset, "go back to the default music")
    p.add_argument("--pool", required=True)

    p = sub.add_parser("status", help="pools, orbit table, settings, music and etcd health")
    p.set_defaults(func=cmd_status)
    p.add_argument("--json", action="store_true")

    config = group("config", "deployment description files")
    p = cmd(config, "check", cmd_config_check, "validate a deployment file")
    p.add_argument("file")
    p = cmd(config, "apply", cmd_config_apply, "make etcd's configuration equal a deployment file")
    p.add_argument("file")

    parked = group("parked", "parked calls")
    p = cmd(parked, "list", cmd_parked_list, "orbit, caller, parker, parked for, next ringback")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("phone", help="a pjsua2 softphone driven by JSON lines on stdin (for people and tests)")
    p.set_defaults(func=cmd_phone)
    p.add_argument("--user", required=True)
    p.add_argument("--edge", help="host:port of the SIP edge: register there and send through it")
    p.add_argument("--sip-port", type=int)
    p.add_argument("--rtp-port", type=int)
    p.add_argument("--auto-answer", action="store_true")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="more options of python -m callpark.lab.phone")

    p = sub.add_parser("node", help="run a park node (supervisor and pjsua2 workers) until SIGTERM")
    p.set_defaults(func=cmd_node)
    p.add_argument("--pool", required=True)
    p.add_argument("--name", required=True, help="node name, unique in the pool")
    p.add_argument("--workers", type=int, default=2, help="pjsua2 worker processes (4 calls each)")
    p.add_argument("--http-port", type=int, default=0, help="port of /metrics, /healthz, /readyz (0: any)")
    p.add_argument("--edge", help="host:port of the SIP edge (outbound proxy and registrar)")
    p.add_argument("--domain", default="callpark.test")
    p.add_argument("--ring-time", type=float, default=20.0, help="seconds a ringback rings (default 20)")
    p.add_argument("--lease-ttl", type=int, default=10)
    p.add_argument("--keepalive", type=float, default=2.0)
    p.add_argument("--safety", type=float, default=2.0, help="stop serving this long before the lease can expire")
    p.add_argument("--etcd-timeout", type=float, default=1.0, help="per-request etcd timeout")
    p.add_argument("--run-dir", help="where worker logs and music go (default: a new temporary dir)")
    p.add_argument("--worker-log-level", default="WARNING")
    p.add_argument("--host", default="127.0.0.1", help="address workers (SIP, RTP) and HTTP listen on")
    p.add_argument("--sip-port-base", type=int, default=0, help="worker i listens on BASE+i (default: free ports)")
    p.add_argument("--rtp-port-base", type=int, default=0, help="worker i gets 16 RTP ports from BASE+16*i")
    p.add_argument(
        "--trusted-peers",
        default="127.0.0.0/8,::1/128",
        help="addresses/CIDR networks allowed to send SIP requests (default loopback; the --edge host is added)",
    )
    p.add_argument("--orbit-scan-burst", type=int, default=10, help="orbit misses a source may make at once")
    p.add_argument("--orbit-scan-per-minute", type=float, default=6.0, help="orbit misses per minute, sustained")
    p.add_argument("--admin-token-file", help=ADMIN_TOKEN_HELP)

    p = sub.add_parser("controller", help="run a failover controller (leader-elected) until SIGTERM")
    p.set_defaults(func=cmd_controller)
    p.add_argument("--name", required=True)
    p.add_argument("--loop", type=float, default=1.0, help="seconds between cycles")
    p.add_argument("--grace", type=float, default=2.0, help="seconds a pool must be down before failover")
    p.add_argument("--lease-ttl", type=int, default=6)
    p.add_argument("--safety", type=float, default=1.5)
    p.add_argument("--etcd-timeout", type=float, default=1.0)
    p.add_argument("--http-port", type=int, default=0)
    p.add_argument("--http-host", default="127.0.0.1", help="address /metrics, /healthz, /readyz listen on")
    p.add_argument("--admin-token-file", help=ADMIN_TOKEN_HELP)

    dr = group("dr", "disaster recovery: status, planned failover, failback, drain")
    p = cmd(dr, "status", cmd_dr_status, "pools, members, owners, epochs, parked calls, last events")
    p.add_argument("--json", action="store_true")
    p.add_argument("--events", type=int, default=10)
    for name, fn, help_ in (
        ("failover", cmd_dr_failover, "planned failover: move a pool's ranges to its backup"),
        ("failback", cmd_dr_failback, "move a pool's ranges back home"),
    ):
        p = cmd(dr, name, fn, help_)
        p.add_argument("--pool", required=True)
        p.add_argument("--timeout", type=float, default=30.0)
    p = cmd(dr, "drain", cmd_dr_drain, "hand a node's parked calls to its peers so it can be stopped")
    p.add_argument("--node", required=True, help="POOL/NODE")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--cancel", action="store_true", help="end the drain: the node parks again")

    p = sub.add_parser("etcd", help="run a local etcd cluster on loopback until Ctrl-C")
    p.set_defaults(func=cmd_etcd)
    p.add_argument("--members", type=int, default=1)
    p.add_argument("--dir", help="data directory (default: a new temporary one)")

    from callpark.deployment import DEFAULT_LOCAL_FILE

    p = sub.add_parser("up", help="run the local default cluster in the foreground (Ctrl-C stops it)")
    p.set_defaults(func=cmd_up)
    p.add_argument("--config", default=str(DEFAULT_LOCAL_FILE))
    p.add_argument("--run-dir", help="keep logs here (default: a new temporary dir)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between status lines")
    p.add_argument("--detach", action="store_true", help="run in the background; 'callpark down' stops it")
    p.add_argument("--state", help="where --detach records the background cluster (default: in the temp dir)")

    p = sub.add_parser("down", help="stop the cluster started with 'callpark up --detach'")
    p.set_defaults(func=cmd_down)
    p.add_argument("--state", help="the state file given to 'up --detach --state'")

    p = sub.add_parser("drill", help="failover drill on the local default cluster: park, fault, verify, failback")
    p.set_defaults(func=cmd_drill)
    p.add_argument("--config", default=str(DEFAULT_LOCAL_FILE))
    p.add_argument("--fault", default="pool-kill", choices=["pool-kill", "planned", "node-crash", "controller-crash"])
    p.add_argument("--calls", type=int, default=4, help="calls parked before the fault (1-12)")
    p.add_argument("--repeat", type=int, default=1, help="run the drill this many times")
    p.add_argument("--json", help="write the JSON report here (default: drill.json in the run dir)")
    p.add_argument("--run-dir", help="keep logs here (default: a new temporary dir)")

    chaos = group("chaos", "chaos suite: faults, workload, history and invariant checker")
    p = cmd(chaos, "run", cmd_chaos_run, "run one scenario on a fresh local cluster and check every invariant")
    p.add_argument("--scenario", required=True, help="a nemesis or a set (see 'callpark chaos list')")
    p.add_argument("--seed", type=int, default=1, help="seeds targets, the workload's choices and packet loss")
    p.add_argument("--duration", type=float, default=0.0, help="seconds of faults; 0: each nemesis once")
    p.add_argument("--out", help="run folder for history, verdict and logs (default: a new temporary dir)")
    p.add_argument("--pairs", type=int, default=3, help="parker/caller/retriever phone triples (1-6)")
    p.add_argument("--rate", type=float, default=1.0, help="new parks per second, all pairs together")
    p.add_argument("--window", type=float, default=0.0, help="seconds each fault lasts (0: the nemesis's own)")
    cmd(chaos, "list", cmd_chaos_list, "the nemeses and scenario sets")
    p = cmd(chaos, "smoke", cmd_chaos_smoke, "the CI smoke set: every nemesis once, fixed seeds")
    p.add_argument("--out", help="parent folder for the runs (default: a new temporary dir)")

    p = sub.add_parser("demo", help="park and retrieve real calls on the local default cluster, then stop")
    p.set_defaults(func=cmd_demo)
    p.add_argument("--config", default=str(DEFAULT_LOCAL_FILE))
    p.add_argument("--run-dir", help="keep logs here (default: a new temporary dir)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``callpark`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.etcd = etcdaccess.from_args(args)  # every command connects with EtcdStore.connect(args.etcd)
    signal.signal(signal.SIGTERM, _terminate)  # commands that run services install their own
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ValidationError as exc:
        print(f"callpark: error: {exc}", file=sys.stderr)
        return EXIT_RULE
    except NotFound as exc:
        print(f"callpark: error: [not-found] {exc}", file=sys.stderr)
        return EXIT_RULE
    except StoreError as exc:
        print(f"callpark: error: [etcd] {exc}", file=sys.stderr)
        return EXIT_STORE
    except CallparkError as exc:
        print(f"callpark: error: {exc}", file=sys.stderr)
        return EXIT_RULE
    except KeyboardInterrupt:
        return 130


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM: unwind like Ctrl-C, so every ``finally`` stops the processes it started."""
    raise KeyboardInterrupt


def run() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run()
