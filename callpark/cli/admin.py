"""Admin commands mirroring the Lync cmdlets: ``orbit``, ``pool``, ``cps``, ``moh``, plus
``status`` and ``config`` (deployment files)."""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from callpark import certs, deployment, status, tables
from callpark.cli.common import Subparsers, admin_store, command, connect, group, print_json
from callpark.dr import rehome
from callpark.errors import NotFound, ValidationError
from callpark.model import admin
from callpark.model.music import validate_wav
from callpark.model.orbits import OrbitRange, RangeType
from callpark.model.pools import FailbackPolicy
from callpark.model.settings import GLOBAL_SCOPE, CpsSettings, parse_scope, parse_timeout_uri
from callpark.sip.message import in_domains
from callpark.store import music as mohstore
from callpark.store.admin import AdminStore
from callpark.store.ownership import read_snapshot

T = TypeVar("T")


def _show(as_json: bool, data: list[dict[str, Any]], headers: Sequence[str], rows: Sequence[Sequence[object]]) -> int:
    """Print ``data`` as JSON, or ``rows`` as a table under ``headers``."""
    if as_json:
        print_json(data)
    else:
        print(tables.render(headers, rows))
    return 0


def _remove(args: argparse.Namespace, remove: Callable[[admin.AdminState, str], admin.AdminState], what: str) -> int:
    admin_store(args).change(lambda s: remove(s, args.name))
    print(f"removed {what} {args.name!r}")
    return 0


def _named(items: Mapping[str, T], name: str | None, what: str) -> list[T]:
    """Every item sorted by name, or only ``name`` (NotFound when it does not exist)."""
    if not name:
        return [items[k] for k in sorted(items)]
    if name not in items:
        raise NotFound(f"{what} {name!r} does not exist")
    return [items[name]]


# -- orbit ---------------------------------------------------------------------------------


def cmd_orbit_new(args: argparse.Namespace) -> int:
    rng = OrbitRange(args.name, args.start, args.end, args.pool, RangeType.parse(args.type))
    admin_store(args).change(lambda s: admin.new_range(s, rng))
    print(f"created range {rng.name!r}: {rng.start}-{rng.end} ({rng.size} orbits, {rng.type.value}) on {rng.pool}")
    return 0


def cmd_orbit_set(args: argparse.Namespace) -> int:
    type_ = RangeType.parse(args.type) if args.type else None
    store = admin_store(args)

    def transition(s: admin.AdminState) -> admin.AdminState:
        return admin.set_range(s, args.name, start=args.start, end=args.end, pool=args.pool, type_=type_)

    if args.dry_run:
        admin.validate_state(transition(store.state()))  # refuses a bad change as the real one would
    if args.pool:
        said = rehome.plan(read_snapshot(store.kv), args.name, args.pool)
        print(said or f"range {args.name!r} already has home pool {args.pool}")
    if args.dry_run:
        print("dry run: nothing changed")
        return 0
    state = store.change(transition)
    r = state.ranges[args.name]
    print(f"updated range {r.name!r}: {r.start}-{r.end} ({r.size} orbits, {r.type.value}) on {r.pool}")
    return 0


def cmd_orbit_get(args: argparse.Namespace) -> int:
    ranges = _named(admin_store(args).state().ranges, args.name, "range")
    if args.filter:
        ranges = [r for r in ranges if fnmatch.fnmatchcase(r.name, args.filter)]
    if args.type:
        wanted = RangeType.parse(args.type)
        ranges = [r for r in ranges if r.type == wanted]
    return _show(
        args.json,
        [r.to_json() | {"size": r.size} for r in ranges],
        ["NAME", "START", "END", "SIZE", "TYPE", "POOL"],
        [(r.name, r.start, r.end, r.size, r.type.value, r.pool) for r in ranges],
    )


def cmd_orbit_remove(args: argparse.Namespace) -> int:
    return _remove(args, admin.remove_range, "range")


# -- pool ----------------------------------------------------------------------------------


def cmd_pool_new(args: argparse.Namespace) -> int:
    failback = FailbackPolicy.parse(args.failback)
    admin_store(args).change(lambda s: admin.new_pool(s, args.name, args.site, args.backup, failback, args.hold_down))
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
    state = admin_store(args).change(
        lambda s: admin.set_pool(
            s, args.name, site=args.site, backup=backup, failback=failback, failback_hold_down_s=args.hold_down
        )
    )
    p = state.pools[args.name]
    print(f"updated pool {p.name!r}: site {p.site}, backup {p.backup or '-'}, failback {p.failback.value}")
    return 0


def cmd_pool_get(args: argparse.Namespace) -> int:
    state = admin_store(args).state()
    pools = _named(state.pools, args.name, "pool")
    rows = [
        (
            p.name,
            p.site,
            p.backup or "-",
            p.failback.value,
            f"{p.failback_hold_down_s}s",
            ",".join(r.name for r in state.ranges_of(p.name)) or "-",
        )
        for p in pools
    ]
    headers = ["POOL", "SITE", "BACKUP", "FAILBACK", "HOLD-DOWN", "RANGES"]
    return _show(args.json, [p.to_json() for p in pools], headers, rows)


def cmd_pool_remove(args: argparse.Namespace) -> int:
    return _remove(args, admin.remove_pool, "pool")


# -- cps -----------------------------------------------------------------------------------

# option dest -> the Lync setting it changes
_CPS_FIELDS = {
    "call_pickup_timeout_threshold": "CallPickupTimeoutThreshold",
    "enable_music_on_hold": "EnableMusicOnHold",
    "max_call_pickup_attempts": "MaxCallPickupAttempts",
    "on_timeout_uri": "OnTimeoutURI",
}


SIP_DOMAINS_ENV = "CALLPARK_SIP_DOMAINS"


def _cps_changes(args: argparse.Namespace) -> dict[str, Any]:
    changes = {setting: getattr(args, dest) for dest, setting in _CPS_FIELDS.items() if getattr(args, dest) is not None}
    if "OnTimeoutURI" in changes:
        _check_timeout_domain(changes["OnTimeoutURI"], args.sip_domains or os.environ.get(SIP_DOMAINS_ENV, ""))
    return changes


def _check_timeout_domain(text: str, domains_text: str) -> None:
    """An OnTimeoutURI must name one of the deployment's SIP domains (nodes never dial others)."""
    uri = parse_timeout_uri(text)  # the syntax error first, with its own rule
    if uri is None:
        return
    domains = [d.strip() for d in domains_text.split(",") if d.strip()]
    if not domains:
        raise ValidationError(
            "cps-uri-domain",
            f"OnTimeoutURI {uri} needs the deployment's SIP domains to be checked: "
            f"give --sip-domains DOMAIN[,DOMAIN] or ${SIP_DOMAINS_ENV}",
        )
    if not in_domains(uri, domains):
        raise ValidationError(
            "cps-uri-domain", f"OnTimeoutURI {uri} is outside the deployment's SIP domains {', '.join(domains)}"
        )


def _print_settings(rows: Sequence[tuple[str, CpsSettings]], as_json: bool) -> None:
    if as_json:
        print_json({scope: s.to_json() for scope, s in rows})
        return
    print(
        tables.render(
            ["SCOPE", *_CPS_FIELDS.values()],
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


def _change_cps(args: argparse.Namespace, changes: dict[str, Any], new: bool) -> int:
    change = admin.cps_new if new else admin.cps_set
    state = admin_store(args).change(lambda s: change(s, args.identity, changes))
    scope = parse_scope(args.identity)
    _print_settings([(scope, state.settings(scope))], args.json)
    return 0


def cmd_cps_new(args: argparse.Namespace) -> int:
    return _change_cps(args, _cps_changes(args), new=True)


def cmd_cps_set(args: argparse.Namespace) -> int:
    changes = _cps_changes(args)
    if not changes:
        raise ValidationError("cps-field", "nothing to change: give at least one setting")
    return _change_cps(args, changes, new=False)


def cmd_cps_get(args: argparse.Namespace) -> int:
    state = admin_store(args).state()
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
    admin_store(args).change(lambda s: admin.cps_remove(s, scope))
    print("reset global settings to the defaults" if scope == GLOBAL_SCOPE else f"removed settings {scope!r}")
    return 0


def cmd_cps_effective(args: argparse.Namespace) -> int:
    scope, settings = admin_store(args).state().effective(args.pool)
    if args.json:
        print_json({"pool": args.pool, "scope": scope, **settings.to_json()})
    else:
        _print_settings([(f"{args.pool} (from {scope})", settings)], False)
    return 0


# -- moh -----------------------------------------------------------------------------------


def cmd_moh_set(args: argparse.Namespace) -> int:
    data = mohstore.read_music_file(Path(args.file))
    meta = mohstore.upload(admin_store(args), args.pool, data, Path(args.file).name)
    print(
        f"music on hold for {args.pool}: {meta.filename} ({meta.size} bytes, {meta.sample_rate} Hz, "
        f"{meta.duration_s:.1f} s, {meta.chunks} chunk(s), sha256 {meta.sha256[:12]})"
    )
    return 0


def cmd_moh_get(args: argparse.Namespace) -> int:
    store = admin_store(args)
    if args.pool not in store.state().pools:
        raise NotFound(f"pool {args.pool!r} does not exist")
    meta, data = mohstore.fetch(store, args.pool)
    if args.output:
        Path(args.output).write_bytes(data)
    info = meta.to_json() if meta else {"pool": args.pool, "source": "default", "size": len(data)}
    if args.json:
        print_json(info)
        return 0
    what = "default music"
    if meta is not None:
        what = f"{meta.filename}, {meta.size} bytes, {meta.sample_rate} Hz, {meta.duration_s:.1f} s"
    print(f"{args.pool}: {what}" + (f" (written to {args.output})" if args.output else ""))
    return 0


def cmd_moh_reset(args: argparse.Namespace) -> int:
    mohstore.reset(admin_store(args), args.pool)
    print(f"music on hold for {args.pool}: back to the default music")
    return 0


# -- status, config ------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    store = connect(args)
    view = status.collect(store, AdminStore(store))
    if args.json:
        print_json(view)
    else:
        print(status.render(view))
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    dep = deployment.load(Path(args.file))
    for source in dep.music.values():
        if source is not None:
            validate_wav(mohstore.read_music_file(source))
    print(
        f"{args.file}: ok ({len(dep.state.pools)} pools, {len(dep.state.ranges)} ranges, "
        f"{len(dep.state.cps)} settings scopes)"
    )
    for line in _cert_warnings(dep, args.cert_warning_days):
        print(f"warning: {line}", file=sys.stderr)
    return 0


def _cert_warnings(dep: deployment.Deployment, days: int) -> list[str]:
    """One line per certificate of the file (TLS, HTTPS, etcd) that expires within ``days``."""
    named = dep.encryption.cert_files()  # must exist: checked when the file was read
    etcd = {f"etcd {what}": Path(path) for what, path in (("CA", dep.etcd.ca), ("client", dep.etcd.cert)) if path}
    named |= {what: path for what, path in etcd.items() if path.is_file()}  # may live on another host
    warnings = (certs.expiry_warning(path, what, days=days) for what, path in named.items())
    return [w for w in warnings if w]


def cmd_config_apply(args: argparse.Namespace) -> int:
    dep = deployment.load(Path(args.file))
    args.etcd = args.etcd.fill_from(dep.etcd.access())  # the file's [etcd] fills what options/env left out
    deployment.apply(admin_store(args), dep)
    print(f"applied {args.file}")
    return 0


# -- parsers -------------------------------------------------------------------------------


def add_parsers(sub: Subparsers) -> None:
    """``orbit``, ``pool``, ``cps``, ``moh``, ``status`` and ``config``."""
    _add_orbit(group(sub, "orbit", "orbit ranges (New/Set/Get/Remove-CsCallParkOrbit)"))
    _add_pool(group(sub, "pool", "pools and their 1:1 backup pairing"))
    _add_cps(group(sub, "cps", "Call Park settings (New/Set/Get/Remove-CsCpsConfiguration)"))
    _add_moh(group(sub, "moh", "music on hold per pool (Set-CsCallParkServiceMusicOnHoldFile)"))
    p = command(sub, "status", cmd_status, "pools, orbit table, settings, music and etcd health")
    p.add_argument("--json", action="store_true")
    config = group(sub, "config", "deployment description files")
    p = command(config, "check", cmd_config_check, "validate a deployment file")
    p.add_argument("file")
    p.add_argument(
        "--cert-warning-days",
        type=int,
        default=certs.EXPIRY_WARNING_DAYS,
        help=f"warn about certificates expiring within this many days (default {certs.EXPIRY_WARNING_DAYS})",
    )
    p = command(config, "apply", cmd_config_apply, "make etcd's configuration equal a deployment file")
    p.add_argument("file")


def _add_orbit(orbit: Subparsers) -> None:
    p = command(orbit, "new", cmd_orbit_new, "create an orbit range")
    p.add_argument("name")
    p.add_argument("--start", required=True, help="NumberRangeStart, e.g. 7000 or *101")
    p.add_argument("--end", required=True, help="NumberRangeEnd, same length and prefix as the start")
    p.add_argument("--pool", required=True, help="the pool hosting the range (CallParkService)")
    p.add_argument("--type", default="CallPark", help="CallPark (default) or GroupPickup")
    p = command(orbit, "set", cmd_orbit_set, "change an orbit range (not its name)")
    p.add_argument("name")
    for option in ("--start", "--end", "--pool", "--type"):
        p.add_argument(option)
    p.add_argument("--dry-run", action="store_true", help="check the change and say what it would do; change nothing")
    p = command(orbit, "get", cmd_orbit_get, "list orbit ranges")
    p.add_argument("name", nargs="?")
    p.add_argument("--filter", help="wildcard on the name, e.g. 'pool-a*'")
    p.add_argument("--type")
    p.add_argument("--json", action="store_true")
    p = command(orbit, "remove", cmd_orbit_remove, "remove an orbit range")
    p.add_argument("name")


def _add_pool(pool: Subparsers) -> None:
    p = command(pool, "new", cmd_pool_new, "create a pool")
    p.add_argument("name")
    p.add_argument("--site", required=True)
    p.add_argument("--backup", help="pair with this pool (reciprocal)")
    p.add_argument("--failback", default="manual", help="auto or manual (default)")
    p.add_argument("--hold-down", type=int, metavar="SECONDS", help="healthy time before automatic failback")
    p = command(pool, "set", cmd_pool_set, "change a pool")
    p.add_argument("name")
    p.add_argument("--site")
    pair = p.add_mutually_exclusive_group()
    pair.add_argument("--backup")
    pair.add_argument("--no-backup", action="store_true", help="unpair (both sides)")
    p.add_argument("--failback")
    p.add_argument("--hold-down", type=int, metavar="SECONDS")
    p = command(pool, "get", cmd_pool_get, "list pools")
    p.add_argument("name", nargs="?")
    p.add_argument("--json", action="store_true")
    p = command(pool, "remove", cmd_pool_remove, "remove a pool that owns no range")
    p.add_argument("name")


def _add_cps_fields(p: argparse.ArgumentParser) -> None:
    p.add_argument("--call-pickup-timeout-threshold", "--timeout", metavar="HH:MM:SS")
    p.add_argument("--enable-music-on-hold", "--music", metavar="true|false")
    p.add_argument("--max-call-pickup-attempts", "--attempts", metavar="N")
    p.add_argument("--on-timeout-uri", metavar="sip:URI|none")
    p.add_argument(
        "--sip-domains",
        metavar="DOMAIN[,DOMAIN]",
        help=f"the deployment's SIP domains; OnTimeoutURI must be in one (default ${SIP_DOMAINS_ENV})",
    )
    p.add_argument("--json", action="store_true")


def _add_cps(cps: Subparsers) -> None:
    p = command(cps, "new", cmd_cps_new, "create site settings")
    p.add_argument("--identity", required=True, help="site:<name>")
    _add_cps_fields(p)
    p = command(cps, "set", cmd_cps_set, "change settings (creates a site's settings from the defaults if absent)")
    p.add_argument("--identity", default="global", help="global (default) or site:<name>; a new site needs no cps new")
    _add_cps_fields(p)
    p = command(cps, "get", cmd_cps_get, "show settings")
    p.add_argument("--identity")
    p.add_argument("--json", action="store_true")
    p = command(cps, "remove", cmd_cps_remove, "remove site settings, or reset global ones")
    p.add_argument("--identity", required=True)
    p = command(cps, "effective", cmd_cps_effective, "the settings in force for a pool")
    p.add_argument("--pool", required=True)
    p.add_argument("--json", action="store_true")


def _add_moh(moh: Subparsers) -> None:
    p = command(moh, "set", cmd_moh_set, "upload a PCM WAV (16-bit mono, 8-48 kHz, at most 8 MiB)")
    p.add_argument("--pool", required=True)
    p.add_argument("file")
    p = command(moh, "get", cmd_moh_get, "show (or save with --output) a pool's music")
    p.add_argument("--pool", required=True)
    p.add_argument("--output", metavar="FILE")
    p.add_argument("--json", action="store_true")
    p = command(moh, "reset", cmd_moh_reset, "go back to the default music")
    p.add_argument("--pool", required=True)
