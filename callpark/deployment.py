"""A deployment description file (TOML): etcd, pools, orbit table, settings, music.

The same file drives ``callpark config check``, ``config apply``, ``demo`` and (later)
``up``. Parsing never half-applies: the whole file becomes one desired
:class:`~callpark.model.admin.AdminState`, validated by the same rules as the admin commands,
and is committed in one transaction.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from callpark import encryption, sipsecurity
from callpark.errors import CallparkError, NotFound, ValidationError
from callpark.model import admin
from callpark.model.orbits import OrbitRange, RangeType
from callpark.model.pools import FailbackPolicy
from callpark.model.settings import GLOBAL_SCOPE, parse_scope
from callpark.sip.message import in_domains
from callpark.store.access import EtcdAccess
from callpark.store.admin import AdminStore
from callpark.store.session import ControllerTimings, LeaseTimings

TOP_LEVEL = {"etcd", "pool", "range", "cps", "moh", "timings", "edge", "security", "notifications", "sip_tls", "http"}
DEFAULT_LOCAL_FILE = Path(__file__).resolve().parent.parent / "deploy" / "local-cluster.toml"


class DeploymentError(CallparkError):
    """The deployment file is unreadable or breaks a rule; the message names where."""


@dataclass(frozen=True)
class EtcdSection:
    """``[etcd]``: the local cluster's shape and security, or a real cluster's client settings.

    ``tls``/``auth`` make the local cluster (``up``, ``demo``, ``drill``) generate
    certificates and enable etcd authentication; ``ca``, ``cert``, ``key``, ``user`` and
    ``password_file`` (paths relative to the file) are client settings used when the CLI's
    own options and environment give none (:mod:`callpark.store.access`).
    """

    members: int = 3
    endpoints: str | None = None
    tls: bool = False
    auth: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password_file: str | None = None

    def access(self) -> EtcdAccess:
        """The client settings of this section (no file is read)."""
        return EtcdAccess(self.endpoints, self.ca, self.cert, self.key, self.user, self.password_file)


ETCD_KEYS = {"members", "endpoints", "tls", "auth", "ca", "cert", "key", "user", "password_file"}


def _etcd_section(raw: dict[str, Any], path: Path) -> EtcdSection:
    unknown = set(raw) - ETCD_KEYS
    if "password" in unknown:
        raise ValidationError("config-etcd", "[etcd] password: never in the file; name a file with password_file")
    if unknown:
        raise ValidationError("config-unknown", f"unknown [etcd] key(s): {', '.join(sorted(unknown))}")
    members = raw.get("members", 3)
    if not isinstance(members, int) or isinstance(members, bool) or members < 1 or members % 2 == 0:
        raise ValidationError("config-etcd", "[etcd] members must be an odd whole number (1, 3 or 5)")
    flags = {}
    for name in ("tls", "auth"):
        flags[name] = raw.get(name, False)
        if not isinstance(flags[name], bool):
            raise ValidationError("config-type", f"[etcd] {name} must be true or false")
    files = {}
    for name in ("ca", "cert", "key", "password_file"):
        value = _str(raw, name, "[etcd]", required=False)
        files[name] = None if value is None else str(path.parent / value)
    if (files["cert"] is None) != (files["key"] is None):
        raise ValidationError("config-etcd", "[etcd] cert and key go together")
    user = _str(raw, "user", "[etcd]", required=False)
    if (user is None) != (files["password_file"] is None):
        raise ValidationError("config-etcd", "[etcd] user and password_file go together")
    endpoints = _str(raw, "endpoints", "[etcd]", required=False)
    if endpoints is not None and (files["ca"] or flags["tls"]) and "http://" in endpoints:
        raise ValidationError("config-etcd", "[etcd] endpoints must be https:// URLs when TLS is configured")
    return EtcdSection(members, endpoints, flags["tls"], flags["auth"], user=user, **files)


@dataclass(frozen=True)
class Timings:
    """Lease, controller and ringback timings of a local cluster, validated together."""

    lease_ttl_s: int = 4
    keepalive_s: float = 0.5
    safety_s: float = 1.0
    etcd_timeout_s: float = 1.0
    ring_time_s: float = 10.0
    controllers: int = 2
    controller_loop_s: float = 0.5
    controller_grace_s: float = 1.0
    controller_ttl_s: int = 4

    def validate(self) -> Timings:
        """Node lease rules and controller rules (``timing-*``), as the processes check them."""
        LeaseTimings(self.lease_ttl_s, self.keepalive_s, self.safety_s, self.etcd_timeout_s).validate()
        ControllerTimings(self.controller_loop_s, self.controller_grace_s, self.controller_ttl_s, 1.0, 0.5).validate()
        if not 1.0 <= self.ring_time_s <= 300.0:
            raise ValidationError("timing-ring", f"ring_time_s must be 1 to 300 seconds, not {self.ring_time_s}")
        if not 0 <= self.controllers <= 5:
            raise ValidationError("config-controllers", f"controllers must be 0 to 5, not {self.controllers}")
        return self


@dataclass(frozen=True)
class PoolNodes:
    """How many park nodes a pool runs locally and how many workers each has."""

    nodes: int = 1
    workers: int = 2


@dataclass(frozen=True)
class Deployment:
    """A parsed, validated deployment file."""

    path: Path
    etcd: EtcdSection
    state: admin.AdminState
    music: dict[str, Path | None] = field(default_factory=dict)  # None: the default music
    nodes: dict[str, PoolNodes] = field(default_factory=dict)
    timings: Timings = field(default_factory=Timings)
    edge_port: int = 0  # 0: a free port is picked at start
    sip_domain: str = "127.0.0.1"  # [edge] domain: the one SIP domain of nodes, edge and URIs
    target_domains: tuple[str, ...] = ()  # [edge] target_domains: more hosts OnTimeoutURI etc. may name
    sip_security: sipsecurity.SipSecurity = field(default_factory=sipsecurity.SipSecurity)
    parker_notices: bool = True  # [notifications] parker: MESSAGE parkers about their calls' outcomes
    encryption: encryption.Encryption = field(default_factory=encryption.Encryption)  # [sip_tls], [http]


def load(path: Path) -> Deployment:
    """Read and validate a deployment file; raise :class:`DeploymentError` with one line."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DeploymentError(f"{path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DeploymentError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise DeploymentError(f"{path}: not valid TOML: nested too deeply") from None
    try:
        return _build(path, raw)
    except (ValidationError, NotFound) as exc:
        raise DeploymentError(f"{path}: {exc}") from None


def _table(raw: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ValidationError("config-shape", f"{where}[{name}] must be a table")
    return value


def _str(item: dict[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    value = item.get(key)
    if value is None:
        if required:
            raise ValidationError("config-missing", f"{where}: missing '{key}'")
        return None
    if not isinstance(value, str):
        raise ValidationError("config-type", f"{where}: '{key}' must be a string, not {type(value).__name__}")
    return value


def _build(path: Path, raw: dict[str, Any]) -> Deployment:
    unknown = set(raw) - TOP_LEVEL
    if unknown:
        raise ValidationError("config-unknown", f"unknown section(s): {', '.join(sorted(unknown))}")
    etcd = _etcd_section(_table(raw, "etcd", ""), path)
    pools = raw.get("pool", [])
    if not isinstance(pools, list) or not all(isinstance(p, dict) for p in pools):
        raise ValidationError("config-shape", "[[pool]] must be an array of tables")
    state = _pools(admin.AdminState(), pools)
    nodes = _pool_nodes(pools)
    state = _backups(state, pools)
    state = _ranges(state, raw.get("range", []))
    state = _cps(state, _table(raw, "cps", ""))
    music = _music(state, _table(raw, "moh", ""), path)
    admin.validate_state(state)
    timings = _timings(_table(raw, "timings", ""))
    edge_port = _table(raw, "edge", "").get("port", 0)
    if not isinstance(edge_port, int) or isinstance(edge_port, bool) or not 0 <= edge_port <= 65535:
        raise ValidationError("config-edge", "[edge] port must be 0 (any free port) to 65535")
    domain, targets = _domains(_table(raw, "edge", ""), state)
    sip_security = sipsecurity.parse(_table(raw, "security", ""), path.parent)
    sip_security.check_exposure(_listeners(raw, pools))
    parker_notices = _notifications(_table(raw, "notifications", ""))
    sip_tls = _table(raw, "sip_tls", "") if "sip_tls" in raw else None
    encrypted = encryption.parse(sip_tls, _table(raw, "http", ""), path.parent)
    encrypted.check_exposure(_listeners(raw, pools))
    return Deployment(
        path=path,
        etcd=etcd,
        state=replace(state),
        music=music,
        nodes=nodes,
        timings=timings,
        edge_port=edge_port,
        sip_domain=domain,
        target_domains=targets,
        sip_security=sip_security,
        parker_notices=parker_notices,
        encryption=encrypted,
    )


def _notifications(section: dict[str, Any]) -> bool:
    """``[notifications] parker`` (default true): whether parkers are told what became of their calls."""
    unknown = set(section) - {"parker"}
    if unknown:
        raise ValidationError("config-unknown", f"[notifications]: unknown key(s) {', '.join(sorted(unknown))}")
    parker = section.get("parker", True)
    if not isinstance(parker, bool):
        raise ValidationError("config-type", "[notifications] parker must be true or false")
    return parker


def _domains(edge: dict[str, Any], state: admin.AdminState) -> tuple[str, tuple[str, ...]]:
    """``[edge] domain`` and ``target_domains``; every OnTimeoutURI must be in one of them."""
    domain = _str(edge, "domain", "[edge]", required=False) or "127.0.0.1"
    targets = edge.get("target_domains", [])
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ValidationError("config-edge", "[edge] target_domains must be a list of host names")
    for name in (domain, *targets):
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", name):
            raise ValidationError("config-edge", f"[edge] {name!r} is not a host name or IPv4 address")
    allowed = (domain, *targets)
    for scope, settings in sorted(state.cps.items()):
        uri = settings.on_timeout_uri
        if uri and not in_domains(uri, allowed):
            where = f"[cps.{scope}] OnTimeoutURI {uri}"
            raise ValidationError("config-on-timeout-uri", f"{where} is outside the SIP domains {', '.join(allowed)}")
    return domain, tuple(targets)


def _listeners(raw: dict[str, Any], pools: list[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Where the edges (``[edge] hosts``) and each pool's nodes (``[[pool]] hosts``) listen."""
    out = {"the SIP edge": sipsecurity.parse_hosts(_table(raw, "edge", "").get("hosts"), "[edge]")}
    for i, item in enumerate(pools):
        out[f"pool {item['name']!r}"] = sipsecurity.parse_hosts(item.get("hosts"), f"pool #{i + 1}")
    return out


def _pools(state: admin.AdminState, pools: list[dict[str, Any]]) -> admin.AdminState:
    """``[[pool]]``: the pools, without their pairings (a pool may name a later one)."""
    for i, item in enumerate(pools):
        where = f"pool #{i + 1}"
        name = _str(item, "name", where)
        site = _str(item, "site", where)
        assert name is not None and site is not None
        hold = item.get("failback_hold_down_s")
        if hold is not None and (not isinstance(hold, int) or isinstance(hold, bool)):
            raise ValidationError("config-type", f"{where}: 'failback_hold_down_s' must be a whole number")
        state = admin.new_pool(
            state,
            name,
            site,
            failback=FailbackPolicy.parse(_str(item, "failback", where, required=False) or "manual"),
            failback_hold_down_s=hold,
        )
    return state


def _backups(state: admin.AdminState, pools: list[dict[str, Any]]) -> admin.AdminState:
    """The ``backup`` pairings of ``[[pool]]``, once every pool exists."""
    for i, item in enumerate(pools):
        backup = _str(item, "backup", f"pool #{i + 1}", required=False)
        if backup is not None and state.pools[item["name"]].backup != backup:
            state = admin.set_pool(state, item["name"], backup=backup)
    return state


def _pool_nodes(pools: list[dict[str, Any]]) -> dict[str, PoolNodes]:
    """``nodes`` and ``workers`` of each ``[[pool]]``."""
    nodes: dict[str, PoolNodes] = {}
    for i, item in enumerate(pools):
        counts = {}
        for key, low, high in (("nodes", 0, 16), ("workers", 1, 256)):
            value = item.get(key, getattr(PoolNodes(), key))
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValidationError("config-type", f"pool #{i + 1}: '{key}' must be a whole number {low} to {high}")
            counts[key] = value
        nodes[item["name"]] = PoolNodes(**counts)
    return nodes


def _ranges(state: admin.AdminState, ranges: Any) -> admin.AdminState:
    """``[[range]]``: the orbit table."""
    if not isinstance(ranges, list) or not all(isinstance(r, dict) for r in ranges):
        raise ValidationError("config-shape", "[[range]] must be an array of tables")
    for i, item in enumerate(ranges):
        where = f"range #{i + 1}"
        fields = [_str(item, k, where) for k in ("name", "start", "end", "pool")]
        name, start, end, pool = (f or "" for f in fields)
        type_ = RangeType.parse(_str(item, "type", where, required=False) or "CallPark")
        state = admin.new_range(state, OrbitRange(name, start, end, pool, type_))
    return state


def _cps(state: admin.AdminState, sections: dict[str, Any]) -> admin.AdminState:
    """``[cps.<scope>]``: global settings are changed, a site's are created."""
    for scope, values in sections.items():
        if not isinstance(values, dict):
            raise ValidationError("config-shape", f"[cps.{scope}] must be a table")
        if parse_scope(scope) == GLOBAL_SCOPE:
            state = admin.cps_set(state, scope, values)
        else:
            state = admin.cps_new(state, scope, values)
    return state


def _music(state: admin.AdminState, section: dict[str, Any], path: Path) -> dict[str, Path | None]:
    """``[moh]``: each pool's music file (None: the default music)."""
    music: dict[str, Path | None] = {}
    for pool, source in section.items():
        if pool not in state.pools:
            raise ValidationError("pool-missing", f"[moh] names unknown pool {pool!r}")
        if not isinstance(source, str):
            raise ValidationError("config-type", f"[moh] {pool}: must be 'default' or a path to a WAV file")
        music[pool] = None if source == "default" else (path.parent / source)
    return music


def _timings(raw: dict[str, Any]) -> Timings:
    known = {f: type(getattr(Timings(), f)) for f in Timings.__dataclass_fields__}
    unknown = set(raw) - set(known)
    if unknown:
        raise ValidationError("config-unknown", f"unknown [timings] key(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        want = known[key]
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or (want is int and not isinstance(value, int)):
            raise ValidationError("config-type", f"[timings] {key} must be a {want.__name__}, not {value!r}")
        values[key] = value
    return Timings(**values).validate()


def apply(store: AdminStore, deployment: Deployment) -> admin.AdminState:
    """Make etcd's admin configuration equal the file's, in one transaction, then set music."""
    from callpark.store import music as mohstore

    desired = deployment.state

    def transition(current: admin.AdminState) -> admin.AdminState:
        return replace(desired, moh={p: m for p, m in current.moh.items() if p in desired.pools})

    store.change(transition)
    for pool, source in sorted(deployment.music.items()):
        if source is None:
            mohstore.reset(store, pool)
        else:
            mohstore.upload(store, pool, mohstore.read_music_file(source), source.name)
    return store.state()
