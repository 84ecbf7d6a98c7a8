"""Render the SIP edge's kamailio.cfg and dispatcher list from a typed description.

Pure functions only: :func:`render_kamailio_cfg` and :func:`render_dispatcher_list` turn an
:class:`EdgeConfig` into file contents; :mod:`callpark.edge.process` writes and runs them.

Dispatcher set ids (the numbering the generated config and list file share):
the N-th pool of :attr:`EdgeConfig.pools` (1-based, declaration order) is dispatcher set N.
:meth:`EdgeConfig.set_id` returns it. Adding, removing or reordering pools therefore needs a
new config (an edge restart); changing a pool's node addresses only needs a new list file and
``dispatcher.reload``.

Routing implemented by the generated config (each route is commented in the output):

* REGISTER -> ``save("location")`` (usrloc in memory, ``db_mode`` 0, AOR = user part only).
* A request-URI addressed to the edge (the SIP domain or the edge address, with no port or the
  edge's port) is classified by its user part:

  - ``park`` (:attr:`EdgeConfig.park_user`) -> the default pool; ``park-<pool>`` -> that pool;
  - an orbit (optional ``*``/``#`` prefix, also ``%2A``/``%23`` escaped, then digits) inside an
    :class:`OrbitRange` -> the range's pool;
  - anything else (phones; orbits in no range) -> ``lookup("location")``, 404 if unregistered.

  A pool's requests go to its dispatcher set (round robin over live nodes); on a local timeout,
  408 or 503 the next node is tried, then the backup pool's set.
* Any other request-URI is relayed only when it names a park node of the dispatcher list (the
  holder node's Contact from a 302) or a registered user (to that user's registered contacts,
  ``lookup``); everything else gets ``404 Not Found: relaying denied`` and nothing is sent (no
  open relay).
* Dialog-creating requests are record-routed; in-dialog requests follow ``loose_route``.
* Replies (including a 302 from a node) are relayed back to the caller.

Security (see docs/ARCHITECTURE.md, "Security: SIP"):

* ``trusted_peers`` (networks, default loopback only): requests from any other source address
  get ``403 Forbidden: untrusted source`` (the park nodes of the dispatcher list are always let
  in). An empty tuple is the explicit opt-out: any source.
* Every request to a park node leaves with exactly one ``X-Callpark-Source: <source ip>``
  header: any such header arriving from outside is removed first, and requests to phones
  carry none (route[SOURCE]). Nodes believe it only from the edge.
* ``auth`` (:class:`~callpark.edge.credentials.DigestAuth`): REGISTER is challenged with 401,
  every other initial request from outside the dispatcher list with 407; a wrong password or
  an unknown user gets ``403 Forbidden: bad credentials``, a From user other than the
  authenticated one ``403 Forbidden: identity mismatch``. HA1 hashes live in a separate
  credentials file (mode 0600) rendered by :func:`render_credentials_cfg`. Replay protection:
  ``qop=auth`` challenges, ``nonce_count`` (each nc once and upwards), ``one_time_nonce`` and
  ``auth_checks_*`` for responses without nc, nonces valid 30 s.
* SIP over TLS (``tls``, :class:`EdgeTls`): a ``tls:`` listener beside UDP with the given
  certificate and key (Debian ``kamailio-tls-modules``); TLS 1.2 or newer, phones' certificates
  are not required (digest auth identifies phones). Settings go to a tls.cfg file rendered by
  :func:`render_tls_cfg`.
* Flood limit (pike): a source other than a park node sending more than ``flood_requests``
  requests per ``flood_window_s`` has its requests dropped without reply, each counted in the
  kamailio counter ``callpark.flood_blocked`` (:data:`FLOOD_COUNTER`); 0 turns it off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from callpark.edge.credentials import DigestAuth
from callpark.edge.dmq import EdgeDmq, dmq_fields
from callpark.edge.routes import ROUTES_HTABLE
from callpark.errors import ValidationError
from callpark.model import orbits
from callpark.model.pools import validate_name
from callpark.peers import DEFAULT_TRUSTED_PEERS, parse_peers
from callpark.sip.message import unescape_orbit_user
from callpark.sip.reasons import ETCD_TROUBLE_REASONS

__all__ = [
    "DISPATCH_ROUND_ROBIN",
    "FLOOD_COUNTER",
    "ConfigError",
    "EdgeConfig",
    "EdgeTimers",
    "EdgeTls",
    "OrbitRange",
    "PoolSpec",
    "parse_orbit",
    "render_credentials_cfg",
    "render_dispatcher_list",
    "render_kamailio_cfg",
    "render_tls_cfg",
]

DISPATCH_ROUND_ROBIN = 4
"""Kamailio dispatcher algorithm 4: round robin over the set's active destinations."""

ENDED_HTABLE = "callpark_ended"
"""Kamailio htable of the Call-IDs of dialogs a BYE ended (route[REPLACES_ENDED] declines their Replaces)."""

ENDED_KEEP_S = 60
"""How long an ended dialog's Call-ID is kept: past any BYE still unanswered (user_timeout)."""

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
_USER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*$")


class ConfigError(ValueError):
    """The edge description is inconsistent (reported before anything is rendered)."""


@contextlib.contextmanager
def _model_rules() -> Iterator[None]:
    """Report a shared rule's :class:`~callpark.errors.ValidationError` as a :class:`ConfigError`."""
    try:
        yield
    except ValidationError as exc:
        raise ConfigError(exc.message) from None


def _split_hostport(address: str) -> tuple[str, int]:
    host, sep, port_text = address.rpartition(":")
    if not sep or not _HOST_RE.match(host) or not port_text.isdigit():
        raise ConfigError(f"node address {address!r} is not host:port")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConfigError(f"node address {address!r}: port out of range")
    return host, port


def parse_orbit(orbit: str) -> tuple[str, str]:
    """Split an orbit number into (prefix, digits); the prefix is ``""``, ``"*"`` or ``"#"``.

    The Lync grammar of :func:`callpark.model.orbits.parse_orbit` (no leading zero, ...);
    URI escapes ``%2A`` and ``%23`` are accepted for the prefix.
    :raises ConfigError: when ``orbit`` is not an orbit number.
    """
    with _model_rules():
        parsed = orbits.parse_orbit(unescape_orbit_user(orbit))
    return parsed.prefix, parsed.digits


@dataclass(frozen=True, kw_only=True)
class PoolSpec:
    """A pool of park nodes: its nodes' SIP addresses (``host:port``) and its backup pool."""

    name: str
    nodes: tuple[str, ...] = ()
    backup: str | None = None

    def __post_init__(self) -> None:
        with _model_rules():
            validate_name("pool", self.name)
        if len(set(self.nodes)) != len(self.nodes):
            raise ConfigError(f"pool {self.name!r} lists a node twice")
        for node in self.nodes:
            _split_hostport(node)
        if self.backup == self.name:
            raise ConfigError(f"pool {self.name!r} cannot be its own backup")


@dataclass(frozen=True, kw_only=True)
class OrbitRange:
    """Orbits ``start``..``end`` homed on ``pool``, shaped as the admin model requires
    (:func:`callpark.model.orbits.validate_range_shape`: same prefix and length, Lync style)."""

    start: str
    end: str
    pool: str
    name: str = ""

    def __post_init__(self) -> None:
        with _model_rules():
            orbits.validate_range_shape(self.model)

    @property
    def model(self) -> orbits.OrbitRange:
        """This range as the admin model's range (named ``<start>-<end>`` when unnamed)."""
        return orbits.OrbitRange(self.name or f"{self.start}-{self.end}", self.start, self.end, self.pool)

    @property
    def prefix(self) -> str:
        return self.model.prefix

    @property
    def digits(self) -> int:
        return self.model.width

    @property
    def low(self) -> int:
        return self.model.first.value

    @property
    def high(self) -> int:
        return self.model.last.value

    def contains(self, orbit: str) -> bool:
        """True when ``orbit`` (possibly URI-escaped) is in this range."""
        return self.model.contains(unescape_orbit_user(orbit))


@dataclass(frozen=True, kw_only=True)
class EdgeTimers:
    """Timers of the edge: how fast a dead node is noticed, and how long others may take.

    ``node_timeout_ms`` is tm's global ``fr_timer``: the time a node has to send any reply to a
    request (so it bounds failover after a node dies mid-request) and the timeout of the
    dispatcher's OPTIONS probes. With ``ping_interval_s`` = 1 and thresholds 1, a dead node is
    marked inactive about ``ping_interval_s + node_timeout_ms`` after it died, at worst; a
    request already on its way to a dead node waits ``node_timeout_ms`` per dead node tried.
    ``user_timeout_ms`` / ``invite_timeout_ms`` (fr_timer / fr_inv_timer via ``t_set_fr``) apply
    to everything else: phones, relayed URIs and in-dialog requests.
    ``silent_before_backup``: after this many silent (timed-out) nodes of a pool, a request goes
    straight to the backup pool instead of trying the pool's other nodes one timeout at a time.
    A pool of n nodes with w workers each has n*w destinations; when the whole pool dies, trying
    each in turn would cost n*w timeouts. Replies such as 503 (a live but full, fenced or
    draining node) still move on to the next node of the same pool.
    """

    ping_interval_s: int = 1
    silent_before_backup: int = 1
    node_timeout_ms: int = 1000
    user_timeout_ms: int = 5000
    invite_timeout_ms: int = 120_000
    probing_threshold: int = 1
    inactive_threshold: int = 1

    def __post_init__(self) -> None:
        if self.ping_interval_s < 1:
            raise ConfigError("ping_interval_s must be >= 1 (kamailio counts whole seconds)")
        for name in ("node_timeout_ms", "user_timeout_ms", "invite_timeout_ms"):
            if getattr(self, name) < 100:
                raise ConfigError(f"{name} must be >= 100 ms")
        if self.probing_threshold < 1 or self.inactive_threshold < 1:
            raise ConfigError("probing and inactive thresholds must be >= 1")
        if self.silent_before_backup < 1:
            raise ConfigError("silent_before_backup must be >= 1")


@dataclass(frozen=True, kw_only=True)
class EdgeTls:
    """SIP over TLS at the edge: a TCP ``port`` on the edge's host, a PEM ``cert`` (chain) and
    its ``key`` (absolute paths; whether the files are usable is checked where they are named,
    :mod:`callpark.deployment`, and by kamailio at start)."""

    port: int
    cert: Path
    key: Path

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"tls port {self.port} out of range")
        for what, path in (("cert", self.cert), ("key", self.key)):
            if not Path(path).is_absolute() or '"' in str(path) or "\n" in str(path):
                raise ConfigError(f"tls {what} {str(path)!r} must be an absolute path without quotes")


@dataclass(frozen=True, kw_only=True)
class EdgeConfig:
    """Everything the generated kamailio.cfg depends on.

    ``host``/``port``: the UDP listen address (TCP too when ``tcp``). ``domain``: the SIP domain
    phones and nodes use (``sip:park@<domain>``); it may equal ``host``. ``pools`` in order give
    the dispatcher set ids (see :meth:`set_id`). ``default_pool``: the pool behind the bare park
    URI (default: the first pool). ``ranges``: orbit ranges and their home pools.
    """

    host: str = "127.0.0.1"
    port: int
    domain: str
    pools: tuple[PoolSpec, ...]
    ranges: tuple[OrbitRange, ...] = ()
    park_user: str = "park"
    default_pool: str | None = None
    tcp: bool = False
    timers: EdgeTimers = field(default_factory=EdgeTimers)
    children: int = 2
    log_level: int = -1
    ping_from_user: str = "edge"
    ping_reply_codes: str = "class=2"
    trusted_peers: tuple[str, ...] = DEFAULT_TRUSTED_PEERS  # loopback; () opts out: any source
    auth: DigestAuth | None = None
    flood_requests: int = 200  # per source and flood_window_s before pike blocks it; 0: no limit
    flood_window_s: int = 2
    blf: bool = True  # presence: phones SUBSCRIBE to orbits (Event: dialog), park nodes PUBLISH
    tls: EdgeTls | None = None  # SIP over TLS beside UDP (kamailio-tls-modules)
    dmq: EdgeDmq | None = None  # registrations replicated to the other sites' edges (callpark.edge.dmq)
    register_peers: tuple[str, ...] = DEFAULT_TRUSTED_PEERS  # without auth: who may REGISTER; () nobody

    def __post_init__(self) -> None:
        if self.trusted_peers:
            with _model_rules():
                parse_peers(self.trusted_peers, where="edge trusted_peers")
        if self.register_peers:
            with _model_rules():
                parse_peers(self.register_peers, where="edge register_peers")
        try:
            ipaddress.IPv4Address(self.host)
        except ValueError as exc:
            raise ConfigError(f"host {self.host!r} must be an IPv4 address") from exc
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} out of range")
        for problem in self.dmq.problems(self.port) if self.dmq else ():
            raise ConfigError(problem)
        if not _HOST_RE.match(self.domain):
            raise ConfigError(f"domain {self.domain!r} is not a host name or address")
        if not _USER_RE.match(self.park_user):
            raise ConfigError(f"park_user {self.park_user!r} must match {_USER_RE.pattern}")
        if not _USER_RE.match(self.ping_from_user):
            raise ConfigError(f"ping_from_user {self.ping_from_user!r} must match {_USER_RE.pattern}")
        if not re.match(r"^[a-z0-9=;]+$", self.ping_reply_codes):
            raise ConfigError(f"ping_reply_codes {self.ping_reply_codes!r} is not class=N;code=NNN")
        if not self.pools:
            raise ConfigError("at least one pool is needed")
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate pool names in {names}")
        for pool in self.pools:
            if pool.backup is not None and pool.backup not in names:
                raise ConfigError(f"pool {pool.name!r}: unknown backup pool {pool.backup!r}")
        if self.default_pool is not None and self.default_pool not in names:
            raise ConfigError(f"unknown default pool {self.default_pool!r}")
        with _model_rules():
            orbits.validate_table([r.model for r in self.ranges], names)
        if not 1 <= self.children <= 64:
            raise ConfigError("children must be 1..64")
        if not -5 <= self.log_level <= 3:
            raise ConfigError("log_level must be -5..3 (kamailio debug levels)")
        if self.flood_requests < 0 or not 1 <= self.flood_window_s <= 60:
            raise ConfigError("flood_requests must be >= 0 (0: off) and flood_window_s 1..60")
        if self.tls is not None and self.tcp and self.tls.port == self.port:
            raise ConfigError(f"tls port {self.tls.port} is also the TCP port")

    def pool(self, name: str) -> PoolSpec:
        """The pool called ``name``."""
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    def set_id(self, pool: str) -> int:
        """Dispatcher set id of ``pool``: its 1-based position in :attr:`pools`."""
        for index, candidate in enumerate(self.pools, start=1):
            if candidate.name == pool:
                return index
        raise KeyError(pool)

    @property
    def park_pool(self) -> str:
        """The pool that receives requests to the bare park URI."""
        return self.default_pool if self.default_pool is not None else self.pools[0].name

    def pool_for_orbit(self, orbit: str) -> str | None:
        """The home pool of ``orbit``, or None when it is in no range (the edge answers 404)."""
        for rng in self.ranges:
            if rng.contains(orbit):
                return rng.pool
        return None

    def with_nodes(self, pool: str, nodes: tuple[str, ...]) -> EdgeConfig:
        """A copy with ``pool``'s node list replaced (set ids unchanged)."""
        self.pool(pool)
        pools = tuple(PoolSpec(name=p.name, nodes=nodes, backup=p.backup) if p.name == pool else p for p in self.pools)
        return dataclasses.replace(self, pools=pools)


def render_dispatcher_list(cfg: EdgeConfig) -> str:
    """The dispatcher list file: one line per node, ``<set id> sip:<host>:<port> 0 0 pool=<name>``."""
    lines = [
        "# callpark SIP edge: dispatcher destinations (generated by callpark.edge.config).",
        "# Set id N = the N-th pool of the edge description; every destination is probed",
        "# with OPTIONS (ds_probing_mode=1).",
        "# setid destination flags priority attrs",
    ]
    for pool in cfg.pools:
        sid = cfg.set_id(pool.name)
        backup = pool.backup or "-"
        lines.append(f"# set {sid}: pool {pool.name} (backup pool {backup}), {len(pool.nodes)} node(s)")
        for node in pool.nodes:
            host, port = _split_hostport(node)
            lines.append(f"{sid} sip:{host}:{port} 0 0 pool={pool.name}")
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    """A kamailio.cfg string literal (inputs are validated; escape anyway)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _backup_set(cfg: EdgeConfig, pool: PoolSpec) -> int:
    return cfg.set_id(pool.backup) if pool.backup is not None else 0


def _park_block(cfg: EdgeConfig) -> str:
    out = []
    park = cfg.pool(cfg.park_pool)
    out.append(f"\t# {cfg.park_user} -> pool {park.name} (set {cfg.set_id(park.name)})")
    out.append(f"\tif ($rU == {_q(cfg.park_user)}) {{")
    out.append(f"\t\t$var(ds_set) = {cfg.set_id(park.name)};")
    out.append(f"\t\t$var(ds_backup) = {_backup_set(cfg, park)};")
    out.append(f"\t\t$var(ds_pool) = {_q(park.name)};")
    out.append("\t\troute(DISPATCH);")
    out.append("\t}")
    for pool in cfg.pools:
        user = f"{cfg.park_user}-{pool.name}"
        out.append(f"\t# {user} -> pool {pool.name} (set {cfg.set_id(pool.name)})")
        out.append(f"\tif ($rU == {_q(user)}) {{")
        out += _dispatch_to(cfg, pool)
    return "\n".join(out)


def _dispatch_to(cfg: EdgeConfig, pool: PoolSpec) -> list[str]:
    """The body of an ``if`` that sends the request to ``pool`` (backup set as failover) and closes it."""
    return [
        f"\t\t$var(ds_set) = {cfg.set_id(pool.name)};",
        f"\t\t$var(ds_backup) = {_backup_set(cfg, pool)};",
        f"\t\t$var(ds_pool) = {_q(pool.name)};",
        "\t\troute(DISPATCH);",
        "\t}",
    ]


def _live_orbit_block() -> str:
    """Route by the live table (:mod:`callpark.edge.routes`) once `callpark edge sync` loaded it."""
    t = ROUTES_HTABLE
    sel = "$(var(row){s.select,%d,|})"
    num = "$(var(row){s.select,%d,|}{s.int})"
    return "\n".join(
        [
            "\t# the live table (ranges and owners from etcd, kept by `callpark edge sync`) once loaded;",
            "\t# before that, the ranges rendered at start below",
            f"\t$var(gen) = $sht({t}=>gen);",
            "\tif ($var(gen) > 0) {",
            f"\t\t$var(n) = $sht({t}=>n$var(gen));",
            "\t\t$var(i) = 0;",
            "\t\twhile ($var(i) < $var(n)) {",
            f"\t\t\t$var(row) = $sht({t}=>r$var(gen).$var(i));",
            f"\t\t\tif ({sel % 0} == $var(orbit_prefix) && {num % 1} == $var(orbit_len)"
            f" && {num % 2} <= $var(orbit_num) && {num % 3} >= $var(orbit_num)) {{",
            f"\t\t\t\t$var(ds_set) = {num % 4};",
            f"\t\t\t\t$var(ds_backup) = {num % 5};",
            f"\t\t\t\t$var(ds_pool) = {sel % 6};",
            "\t\t\t\troute(DISPATCH);",
            "\t\t\t\texit;",
            "\t\t\t}",
            "\t\t\t$var(i) = $var(i) + 1;",
            "\t\t}",
            "\t\treturn;",
            "\t}",
        ]
    )


def _orbit_block(cfg: EdgeConfig) -> str:
    out = []
    if not cfg.ranges:
        out.append("\t# no orbit ranges configured")
    for rng in cfg.ranges:
        pool = cfg.pool(rng.pool)
        label = f" ({rng.name})" if rng.name else ""
        out.append(f"\t# range {rng.start}..{rng.end}{label} -> pool {pool.name} (set {cfg.set_id(pool.name)})")
        out.append(
            f"\tif ($var(orbit_prefix) == {_q(rng.prefix or '-')} && $var(orbit_len) == {rng.digits}"
            f" && $var(orbit_num) >= {rng.low} && $var(orbit_num) <= {rng.high}) {{"
        )
        out += _dispatch_to(cfg, pool)
    return "\n".join(out)


def _pool_comment(cfg: EdgeConfig) -> str:
    lines = []
    for pool in cfg.pools:
        backup = f"backup pool {pool.backup} (set {cfg.set_id(pool.backup)})" if pool.backup else "no backup"
        lines.append(f"#   set {cfg.set_id(pool.name)}: pool {pool.name}, {len(pool.nodes)} node(s), {backup}")
    for rng in cfg.ranges:
        lines.append(f"#   orbits {rng.start}..{rng.end} -> pool {rng.pool}")
    return "\n".join(lines)


AUTH_HTABLE = "callpark_auth"


def render_credentials_cfg(cfg: EdgeConfig) -> str:
    """The credentials include of kamailio.cfg: HA1 hashes loaded into an htable at start.

    Write it with mode 0600: an HA1 is a password equivalent for its realm.
    """
    if cfg.auth is None:
        raise ConfigError("render_credentials_cfg needs an edge with auth")
    lines = [
        "# callpark SIP edge: digest credentials (HA1 hashes, never passwords). Generated; mode 0600.",
        "event_route[htable:mod-init] {",
    ]
    for user, digest in sorted(cfg.auth.users.items()):
        lines.append(f"\t$sht({AUTH_HTABLE}=>{user}) = {_q(digest)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _acl_block(cfg: EdgeConfig) -> str:
    if not cfg.trusted_peers:
        return "\t# no trusted_peers configured: requests from any source are accepted"
    nets = [str(n) for n in parse_peers(cfg.trusted_peers)]
    tests = " || ".join(f'is_in_subnet("$si", {_q(n)})' for n in nets)
    return (
        f"\t# trusted peers: {', '.join(nets)}; park nodes of the dispatcher list always\n"
        f"\tif (!(ds_is_from_list() || {tests})) {{\n"
        '\t\txlog("L_WARN", "untrusted source $si:$sp: $rm $ru refused\\n");\n'
        f"\t\t{_count('untrusted_refused')}\n"
        '\t\tsl_send_reply("403", "Forbidden: untrusted source");\n'
        "\t\texit;\n"
        "\t}"
    )


# Digest replay protection (Kamailio auth module): challenges carry qop=auth and every nonce
# count (nc) is accepted once and only upwards, so a captured Authorization header is refused
# while a phone may still reuse its nonce with a higher nc; a response without nc is bound to
# its request URI, source IP (and REGISTER's Call-ID) and accepted once (one_time_nonce).
# Nonces expire after 30 s.
_REPLAY_PARAMS = (
    "# ----- digest replay protection: nc once and upwards; without nc a nonce works once\n"
    'modparam("auth", "nonce_expire", 30)\n'
    'modparam("auth", "qop", "auth")\n'
    'modparam("auth", "nonce_count", 1)\n'
    'modparam("auth", "one_time_nonce", 1)\n'
    'modparam("auth", "auth_checks_register", 11)\n'
    'modparam("auth", "auth_checks_no_dlg", 9)\n'
)


def _auth_route(cfg: EdgeConfig) -> str:
    if cfg.auth is None:
        return "route[AUTH] {\n\treturn;\n}\n"
    realm = _q(cfg.auth.realm)
    return f"""route[AUTH] {{
	if (ds_is_from_list()) {{
		# park nodes (ringbacks, orbit MESSAGEs, OnTimeoutURI transfers) do not authenticate
		return;
	}}
	if ($au == $null) {{
		if (is_method("REGISTER")) {{
			www_challenge({realm}, "1");
		}} else {{
			proxy_challenge({realm}, "1");
		}}
		exit;
	}}
	$var(ha1) = $sht({AUTH_HTABLE}=>$au);
	if ($var(ha1) == $null) {{
		$var(ha1) = "-";
	}}
	if (is_method("REGISTER")) {{
		pv_www_authenticate({realm}, "$var(ha1)", "1");
	}} else {{
		pv_proxy_authenticate({realm}, "$var(ha1)", "1");
	}}
	$var(rc) = $rc;
	if ($var(rc) < 0) {{
		if ($var(rc) == -2 || $var(rc) == -3) {{
			xlog("L_WARN", "bad credentials for user $au from $si:$sp: $rm\\n");
			cnt_inc("callpark.auth_refused");
			sl_send_reply("403", "Forbidden: bad credentials");
			exit;
		}}
		# no credentials for our realm, stale or reused nonce: challenge again (a replayed
		# nonce count is reported as stale, -4, like an expired nonce)
		xlog("L_INFO", "digest of $au from $si:$sp not accepted (code $var(rc)): $rm\\n");
		if ($var(rc) == -4) {{
			cnt_inc("callpark.auth_stale");
		}} else if ($var(rc) != -5) {{
			cnt_inc("callpark.auth_refused");
		}}
		if (is_method("REGISTER")) {{
			www_challenge({realm}, "1");
		}} else {{
			proxy_challenge({realm}, "1");
		}}
		exit;
	}}
	if ((is_method("REGISTER") && $au != $tU) || (!is_method("REGISTER") && $au != $fU)) {{
		xlog("L_WARN", "user $au from $si:$sp claims another identity: $rm\\n");
		cnt_inc("callpark.auth_refused");
		sl_send_reply("403", "Forbidden: identity mismatch");
		exit;
	}}
	consume_credentials();
}}
"""


def _register_block(cfg: EdgeConfig) -> str:
    """Who may REGISTER without digest auth: only ``register_peers`` (no open registrar)."""
    if cfg.auth is not None:
        return "\t# digest auth: route[AUTH] authenticated this REGISTER (its To user is the user's own)"
    refuse = (
        '\t\txlog("L_WARN", "REGISTER of $tU from $si:$sp without digest auth refused\\n");\n'
        f"\t\t{_count('register_refused')}\n"
        '\t\tsl_send_reply("403", "Forbidden: registration needs authentication");\n'
        "\t\texit;\n"
    )
    if not cfg.register_peers:
        return "\t# no digest auth and no register_peers: nobody may register\n" + refuse.replace("\t\t", "\t")
    nets = [str(n) for n in parse_peers(cfg.register_peers)]
    tests = " || ".join(f'is_in_subnet("$si", {_q(n)})' for n in nets)
    return (
        f"\t# no digest auth: only phones of {', '.join(nets)} may register (register_peers)\n"
        f"\tif (!({tests})) {{\n" + refuse + "\t}"
    )


def _check_render_args(
    cfg: EdgeConfig, instance: str, dispatcher_list: Path, rpc_socket: str | None, credentials_file: Path | None
) -> None:
    """Refuse arguments of :func:`render_kamailio_cfg` that would make a broken config."""
    if not re.match(r"^[A-Za-z0-9_.-]*$", instance):
        raise ConfigError(f"instance token {instance!r} must match [A-Za-z0-9_.-]*")
    if not dispatcher_list.is_absolute():
        raise ConfigError("dispatcher_list must be an absolute path")
    if rpc_socket is not None and not (rpc_socket.startswith("/") or rpc_socket.startswith("udp:")):
        raise ConfigError("rpc_socket must be an absolute path or udp:<ip>:<port>")
    if cfg.auth is not None and (credentials_file is None or not credentials_file.is_absolute()):
        raise ConfigError("an edge with auth needs an absolute credentials_file path")


def _security_fields(cfg: EdgeConfig, credentials_file: Path | None) -> dict[str, str]:
    """Template fields of the ACL and digest authentication (modules, parameters, routes)."""
    modules = 'loadmodule "ipops.so"\n' if cfg.trusted_peers or (cfg.auth is None and cfg.register_peers) else ""
    params = ""
    if cfg.auth is not None:
        assert credentials_file is not None
        modules += 'loadmodule "auth.so"\n'  # htable is always loaded (the live routing table)
        params = (
            "# ----- digest authentication: HA1 per user in an htable, filled from the credentials file\n"
            f'modparam("htable", "htable", "{AUTH_HTABLE}=>size=10;")\n'
            f"{_REPLAY_PARAMS}"
            f"import_file {_q(str(credentials_file))}\n"
        )
    return {
        "security_modules": modules,
        "security_params": params,
        "acl_block": _acl_block(cfg).replace("{", "{{").replace("}", "}}"),
        "auth_route": _auth_route(cfg).replace("{", "{{").replace("}", "}}"),
        "register_block": _register_block(cfg).replace("{", "{{").replace("}", "}}"),
    }


COUNTER_GROUP = "callpark"
"""The kamailio counter group of every refusal the edge counts (JSON-RPC ``cnt.grp_get_all``)."""

EDGE_COUNTERS: dict[str, str] = {
    "flood_blocked": "requests dropped by the flood limit (pike), no reply",
    "untrusted_refused": "requests from a source outside trusted_peers (403 untrusted source)",
    "relay_denied": "requests for addresses the edge does not serve (404 relaying denied)",
    "auth_refused": "requests whose digest credentials failed (403 bad credentials or identity mismatch)",
    "auth_stale": "digest answers with a replayed or expired nonce (a new challenge; honest phones' expired ones too)",
    "register_refused": "REGISTERs without digest auth from outside register_peers (403)",
    "dialog_refused": "in-dialog requests of no dialog the edge knows (403; an ACK is dropped)",
    "replaces_ended": "INVITEs with Replaces of a dialog a BYE ended (603; a takeover of a caller who hung up)",
    "source_spoofed": "requests arriving with an X-Callpark-Source header (removed; the real source is used)",
}
"""Name -> meaning of every counter in :data:`COUNTER_GROUP` (exported as kamailio counters)."""

FLOOD_COUNTER = (COUNTER_GROUP, "flood_blocked")
"""The kamailio counter (group, name) of requests dropped by the flood limit (``cnt.get``)."""


def _counter_params() -> str:
    lines = ["# ----- counters: every refusal of an attack is counted (cnt.grp_get_all callpark)"]
    for name, meaning in EDGE_COUNTERS.items():
        lines.append(f'modparam("counters", "script_counter", "{COUNTER_GROUP}.{name}: {meaning}")')
    return "\n".join(lines) + "\n"


def _count(name: str) -> str:
    """The kamailio statement that counts one refusal of kind ``name`` (a key of :data:`EDGE_COUNTERS`)."""
    assert name in EDGE_COUNTERS, name
    return f'cnt_inc("{COUNTER_GROUP}.{name}");'


def _flood_fields(cfg: EdgeConfig) -> dict[str, str]:
    """Template fields of the per-source flood limit (pike), counted in :data:`FLOOD_COUNTER`.

    A source sending more than ``flood_requests`` requests per ``flood_window_s`` (pike blocks
    between once and three times that) is ignored until it slows down: its requests are dropped
    without a reply (answering a flood would amplify it). Park nodes are never limited.
    """
    if cfg.flood_requests == 0:
        return {"flood_modules": "", "flood_params": "", "flood_block": "\t# no flood limit configured"}
    group, name = FLOOD_COUNTER
    params = (
        f"# ----- flood limit: pike per source address; dropped requests counted in {group}.{name}\n"
        f'modparam("pike", "sampling_time_unit", {cfg.flood_window_s})\n'
        f'modparam("pike", "reqs_density_per_unit", {cfg.flood_requests})\n'
        'modparam("pike", "remove_latency", 30)\n'
    )
    block = (
        f"\t# flood limit: more than {cfg.flood_requests} requests per {cfg.flood_window_s} s from one source\n"
        "\tif (!ds_is_from_list() && !pike_check_req()) {{\n"
        "\t\tif ($rc == -2) {{\n"
        '\t\t\txlog("L_WARN", "flood from $si: requests dropped until it slows down\\n");\n'
        "\t\t}}\n"
        f'\t\tcnt_inc("{group}.{name}");\n'
        "\t\texit;\n"
        "\t}}"
    )
    return {
        "flood_modules": 'loadmodule "pike.so"\n',
        "flood_params": params,
        "flood_block": block,
    }


def _rpc_fields(rpc_socket: str | None) -> dict[str, str]:
    """Template fields of the jsonrpcs interface (empty module, a comment, when disabled)."""
    if rpc_socket is None:
        return {"rpc_modules": "", "rpc_params": "# jsonrpcs disabled\n"}
    return {
        "rpc_modules": 'loadmodule "jsonrpcs.so"\n',
        "rpc_params": (
            "# ----- jsonrpcs: JSON-RPC over a datagram socket (dispatcher.list, dispatcher.reload, ul.dump)\n"
            'modparam("jsonrpcs", "transport", 4)\n'
            f'modparam("jsonrpcs", "dgram_socket", {_q(rpc_socket)})\n'
            'modparam("jsonrpcs", "pretty_format", 0)\n'
            'modparam("jsonrpcs", "dgram_mode", 0660)\n'  # the edge's user and group (edge-sync)
        ),
    }


def render_tls_cfg(cfg: EdgeConfig) -> str:
    """The tls module's configuration file: our certificate as the server; TLS 1.2 or newer.

    Phones are not asked for certificates (digest auth identifies them). As a client (a new
    connection to a phone's TLS Contact) the edge does not verify the phone's certificate:
    phones rarely have one from a CA the edge knows.
    """
    if cfg.tls is None:
        raise ConfigError("no tls section in the edge description")
    return (
        "# callpark SIP edge: kamailio tls module settings (generated by callpark.edge.config)\n"
        "[server:default]\n"
        "method = TLSv1.2+\n"
        "verify_certificate = no\n"
        "require_certificate = no\n"
        f"certificate = {cfg.tls.cert}\n"
        f"private_key = {cfg.tls.key}\n"
        "\n"
        "[client:default]\n"
        "method = TLSv1.2+\n"
        "verify_certificate = no\n"
        "require_certificate = no\n"
    )


def _tls_fields(cfg: EdgeConfig, tls_file: Path | None) -> dict[str, str]:
    """Template fields of SIP over TLS: the listener, the module (loaded first) and its file."""
    if cfg.tls is None:
        return {"tls_listen": "enable_tls=no", "tls_modules": "", "tls_params": ""}
    if tls_file is None or not tls_file.is_absolute():
        raise ConfigError("tls needs the absolute path of the file written from render_tls_cfg")
    return {
        "tls_listen": f"enable_tls=yes\nlisten=tls:{cfg.host}:{cfg.tls.port}",
        "tls_modules": 'loadmodule "tls.so"\n',
        "tls_params": (
            "# ----- tls: SIP over TLS (certificate and key in the file)\n"
            f'modparam("tls", "config", {_q(str(tls_file))})\n'
        ),
    }


def _listen_fields(cfg: EdgeConfig, instance: str) -> dict[str, object]:
    """Template fields of the global section: sockets, processes, logging, identity headers."""
    listen = [f"listen=udp:{cfg.host}:{cfg.port}"]
    if cfg.tcp:
        listen.append(f"listen=tcp:{cfg.host}:{cfg.port}")
    return {
        "pools_comment": _pool_comment(cfg),
        "agent": _q(("Server: callpark-edge " + instance).strip()),
        "ua": _q(("User-Agent: callpark-edge " + instance).strip()),
        "log_level": cfg.log_level,
        "children": cfg.children,
        "listen": "\n".join(listen),
        "tcp_line": "disable_tcp=no" if cfg.tcp or cfg.tls else "disable_tcp=yes",  # TLS runs on kamailio's TCP
    }


def _routing_fields(cfg: EdgeConfig, dispatcher_list: Path) -> dict[str, object]:
    """Template fields of the timers, the dispatcher and the routes."""
    t = cfg.timers
    return {
        "node_timeout_ms": t.node_timeout_ms,
        "silent_before_backup": t.silent_before_backup,
        "etcd_trouble": " || ".join(f"$T_reply_reason == {_q(r)}" for r in ETCD_TROUBLE_REASONS),
        "user_timeout_ms": t.user_timeout_ms,
        "invite_timeout_ms": t.invite_timeout_ms,
        "dispatcher_list": _q(str(dispatcher_list)),
        "ping_from": _q(f"sip:{cfg.ping_from_user}@{cfg.domain}"),
        "ping_interval": t.ping_interval_s,
        "probing_threshold": t.probing_threshold,
        "inactive_threshold": t.inactive_threshold,
        "ping_reply_codes": _q(cfg.ping_reply_codes),
        "allow": ALLOWED_METHODS,
        "domain": _q(cfg.domain),
        "host": _q(cfg.host),
        "port_str": _q(str(cfg.port)),
        "park_block": _park_block(cfg),
        "orbit_block": _live_orbit_block() + "\n" + _orbit_block(cfg),
        "routes_htable": ROUTES_HTABLE,
        "ended_htable": ENDED_HTABLE,
        "ended_keep_s": ENDED_KEEP_S,
        "count_replaces_ended": _count("replaces_ended"),
        "algorithm": DISPATCH_ROUND_ROBIN,
        "park_prefix": _q(f"^{cfg.park_user}(-|$)"),
    }


def _blf_fields(cfg: EdgeConfig) -> dict[str, str]:
    """Template fields of the busy lamp field (presence + presence_dialoginfo, in memory only)."""
    if not cfg.blf:
        stub = "\treturn;\n"
        return {
            "blf_modules": "",
            "blf_params": "",
            "pub": "",
            "blf_indialog": "",
            "blf_routes": f"route[BLF_PUBLISH] {{{{\n{stub}}}}}\nroute[BLF_SUBSCRIBE] {{{{\n{stub}}}}}\n",
        }
    return {
        "blf_modules": 'loadmodule "presence.so"\nloadmodule "presence_dialoginfo.so"\n',
        "blf_params": _BLF_PARAMS.format(server=_q(f"sip:{cfg.host}:{cfg.port}")),
        "pub": "|PUBLISH",  # the method filter of route[REQINIT]
        "blf_indialog": _BLF_INDIALOG,
        "blf_routes": _BLF_ROUTES.replace("@BLF_TARGETS@", _blf_targets(cfg)).replace("@DOMAIN@", _q(cfg.domain)),
    }


def _blf_targets(cfg: EdgeConfig) -> str:
    """Sets $var(blf) = 1 when $var(orbit_*) (parsed by route[BLF_TARGET]) is in a range."""
    tests = [
        f"($var(orbit_prefix) == {_q(rng.prefix or '-')} && $var(orbit_len) == {rng.digits}"
        f" && $var(orbit_num) >= {rng.low} && $var(orbit_num) <= {rng.high})"
        for rng in cfg.ranges
    ]
    if not tests:
        return "\t# no orbit ranges configured: nothing to subscribe to"
    return "\tif (" + "\n\t\t\t|| ".join(tests) + ") {\n\t\t$var(blf) = 1;\n\t}"


# presence keeps publications (publ_cache 2) and subscriptions (subs_db_mode 0) in memory: no
# database. force_single_dialog: one dialog per NOTIFY, a terminated dialog beating a confirmed
# one of the same id (a dead holder's stale publication) -- see docs/ARCHITECTURE.md.
_BLF_PARAMS = """\
# ----- presence (BLF): in memory only; expired publications checked every 5 s
modparam("presence", "publ_cache", 2)
modparam("presence", "subs_db_mode", 0)
modparam("presence", "clean_period", 5)
modparam("presence", "max_expires", 3600)
modparam("presence", "server_address", {server})
modparam("presence_dialoginfo", "force_single_dialog", 1)
modparam("presence_dialoginfo", "force_dummy_dialog", 1)
"""

_BLF_INDIALOG = """\
	if (is_method("SUBSCRIBE") && uri == myself) {{
		# refresh or end of a BLF subscription held by this edge's presence module
		handle_subscribe();
		exit;
	}}
"""

# Literal kamailio text (not passed through str.format): @BLF_TARGETS@ and @DOMAIN@ are replaced.
_BLF_ROUTES = """\
# BLF: only park nodes (a dispatcher destination's address, any port or transport) PUBLISH an orbit's
# dialog state; no digest (they hold no phone credentials), the source address is the proof.
route[BLF_PUBLISH] {
	if (!is_method("PUBLISH")) {
		return;
	}
	if (!ds_is_from_list("-1", "3")) {
		xlog("L_WARN", "PUBLISH from $si:$sp refused: not a park node\\n");
		sl_send_reply("403", "Forbidden: only park nodes publish");
		exit;
	}
	route(BLF_TARGET);
	if ($var(blf) == 0) {
		sl_send_reply("404", "Not Found: not an orbit");
		exit;
	}
	if (!($hdr(Event) =~ "^dialog *(;.*)?$")) {
		append_to_reply("Allow-Events: dialog\\r\\n");
		sl_send_reply("489", "Bad Event");
		exit;
	}
	handle_publish();
	exit;
}

# BLF: a phone (authenticated like any request, route[AUTH]) subscribes to an orbit's dialog
# state; other SUBSCRIBEs go on to the usual routing.
route[BLF_SUBSCRIBE] {
	if (!is_method("SUBSCRIBE")) {
		return;
	}
	route(BLF_TARGET);
	if ($var(blf) == 0) {
		return;
	}
	if (!($hdr(Event) =~ "^dialog *(;.*)?$")) {
		append_to_reply("Allow-Events: dialog\\r\\n");
		sl_send_reply("489", "Bad Event");
		exit;
	}
	handle_subscribe();
	exit;
}

# $var(blf) = 1 when the R-URI is an orbit of a range at this edge; the R-URI is then rewritten
# to sip:<orbit>@<domain> (* kept, # escaped) so publisher and watchers name the same presentity.
route[BLF_TARGET] {
	$var(blf) = 0;
	route(LOCALURI);
	if ($var(local) == 0 || $rU == $null) {
		return;
	}
	$var(orbit) = $(rU{s.unescape.user});
	$var(orbit_prefix) = "-";
	$var(orbit_digits) = $var(orbit);
	if ($var(orbit) =~ "^[*#][0-9]+$") {
		$var(orbit_prefix) = $(var(orbit){s.substr,0,1});
		$var(orbit_digits) = $(var(orbit){s.substr,1,0});
	}
	if (!($var(orbit_digits) =~ "^[0-9]{1,9}$")) {
		return;
	}
	$var(orbit_len) = $(var(orbit_digits){s.len});
	$var(orbit_num) = $(var(orbit_digits){s.int});
@BLF_TARGETS@
	if ($var(blf) == 1) {
		$var(user) = $var(orbit);
		if ($var(orbit_prefix) == "#") {
			$var(user) = "%23" + $var(orbit_digits);
		}
		$ru = "sip:" + $var(user) + "@" + @DOMAIN@;
	}
}
"""


def render_kamailio_cfg(
    cfg: EdgeConfig,
    *,
    dispatcher_list: Path,
    rpc_socket: str | None = None,
    instance: str = "",
    credentials_file: Path | None = None,
    tls_file: Path | None = None,
) -> str:
    """The complete kamailio.cfg for ``cfg``.

    :param dispatcher_list: absolute path of the file written from :func:`render_dispatcher_list`.
    :param rpc_socket: where the jsonrpcs datagram server listens: an absolute UNIX socket path
        or ``udp:<ip>:<port>``; None disables the RPC interface.
    :param instance: a token appended to the Server/User-Agent headers (``callpark-edge <token>``)
        so a readiness probe can tell this instance from another one on the same port.
    :param credentials_file: absolute path of the file written from :func:`render_credentials_cfg`;
        required when ``cfg.auth`` is set.
    :param tls_file: absolute path of the file written from :func:`render_tls_cfg`; required
        when ``cfg.tls`` is set.
    """
    _check_render_args(cfg, instance, dispatcher_list, rpc_socket, credentials_file)
    fields = {
        **_listen_fields(cfg, instance),
        **_rpc_fields(rpc_socket),
        **_security_fields(cfg, credentials_file),
        **_flood_fields(cfg),
        **_routing_fields(cfg, dispatcher_list),
        **_blf_fields(cfg),
        **_tls_fields(cfg, tls_file),
        "counter_params": _counter_params(),
        **dmq_fields(cfg.dmq, cfg.host),
    }
    return _TEMPLATE.format(**fields).replace("{{", "{").replace("}}", "}")


# The template is filled with str.format: braces of the kamailio language are doubled.
ALLOWED_METHODS = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, REFER, NOTIFY, MESSAGE, INFO, UPDATE, PRACK"

_TEMPLATE = """\
#!KAMAILIO
#
# callpark SIP edge: registrar for phones, dispatcher to park nodes with failover to the
# backup pool, record-routing proxy. Generated by callpark.edge.config; do not edit by hand.
#
# Dispatcher sets (set id N = N-th pool of the edge description):
{pools_comment}

####### Global parameters #########

debug={log_level}
log_stderror=yes
fork=yes
children={children}
auto_aliases=no
dns=no
rev_dns=no
dns_try_ipv6=no
use_dns_cache=off
{listen}
{dmq_listen}
{tcp_line}
{tls_listen}
sip_warning=no
server_header={agent}
user_agent_header={ua}

####### Modules #########

{tls_modules}loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "dispatcher.so"
loadmodule "htable.so"
loadmodule "counters.so"
loadmodule "dialog.so"
{dmq_modules}{rpc_modules}{security_modules}{flood_modules}{blf_modules}
{counter_params}{dmq_params}{rpc_params}{security_params}{flood_params}{blf_params}{tls_params}
# ----- dialog: INVITE dialogs the edge relayed, matched by Call-ID and tags (not a guessable
# cookie); an in-dialog request from a phone must belong to one (route[WITHINDLG])
modparam("dialog", "dlg_match_mode", 2)
modparam("dialog", "default_timeout", 43200)

# ----- tm: fr_timer bounds how long a node may stay silent (also the OPTIONS probe timeout);
# everything else gets user_timeout via t_set_fr() in route[RELAY_PATIENT]
modparam("tm", "fr_timer", {node_timeout_ms})
modparam("tm", "fr_inv_timer", {invite_timeout_ms})
modparam("tm", "failure_reply_mode", 3)

# ----- htable: the live orbit routing table, written by `callpark edge sync` over jsonrpcs
modparam("htable", "htable", "{routes_htable}=>size=8;")
# ... and the Call-IDs of dialogs a BYE ended in the last minute: an INVITE with Replaces of
# one of them is declined (route[REPLACES_ENDED])
modparam("htable", "htable", "{ended_htable}=>size=10;autoexpire={ended_keep_s};")

# ----- rr
modparam("rr", "enable_full_lr", 0)
modparam("rr", "append_fromtag", 0)

# ----- usrloc / registrar: in memory only; the AOR is the user part (single domain)
modparam("usrloc", "db_mode", 0)
modparam("usrloc", "use_domain", 0)
modparam("usrloc", "timer_interval", 10)
modparam("registrar", "method_filtering", 1)
modparam("registrar", "max_expires", 3600)
# no GRUUs: a phone that asks for one (Linphone) would put sip:user@domain;gr=... in its
# dialogs' Contact, which in-dialog requests (the ACK of its 200) reach by loose_route with no
# location lookup, so they went to port 5060 of the domain and were lost
modparam("registrar", "gruu_enabled", 0)

# ----- sanity
modparam("sanity", "autodrop", 0)

# ----- dispatcher: every destination is probed with OPTIONS (ds_probing_mode=1);
# flags=2 keeps the rest of a set in an XAVP for ds_next_dst() failover
modparam("dispatcher", "list_file", {dispatcher_list})
modparam("dispatcher", "flags", 2)
modparam("dispatcher", "ds_probing_mode", 1)
modparam("dispatcher", "ds_ping_interval", {ping_interval})
modparam("dispatcher", "ds_probing_threshold", {probing_threshold})
modparam("dispatcher", "ds_inactive_threshold", {inactive_threshold})
modparam("dispatcher", "ds_ping_from", {ping_from})
modparam("dispatcher", "ds_ping_reply_codes", {ping_reply_codes})
modparam("dispatcher", "ds_timer_mode", 1)
modparam("dispatcher", "reload_delta", 1)

####### Routing #########

# Every request starts here.
request_route {{
{dmq_block}
	route(REQINIT);

	# CANCEL: relay hop by hop when it matches a transaction
	if (is_method("CANCEL")) {{
		if (t_check_trans()) {{
			route(RELAY);
		}}
		exit;
	}}

	# absorb retransmissions of requests we already handle
	if (!is_method("ACK")) {{
		if (t_precheck_trans()) {{
			t_check_trans();
			exit;
		}}
		t_check_trans();
	}}

	route(WITHINDLG);

	### initial requests only (no To tag) from here on

	route(BLF_PUBLISH);
	route(AUTH);
	route(BLF_SUBSCRIBE);
	route(REPLACES_ENDED);

	# our own record-route is added below; routes preloaded by the sender
	# (an outbound proxy entry pointing at us) are dropped
	remove_hf("Route");
	if (is_method("INVITE|SUBSCRIBE|REFER")) {{
		record_route();
	}}
	route(REFERRED_BY);
	if (is_method("INVITE")) {{
		# remember the dialog: its in-dialog requests are relayed (route[WITHINDLG])
		dlg_manage();
	}}

	route(REGISTRAR);

	route(LOCALURI);
	if ($var(local) == 0) {{
		# not addressed to the edge: only a park node (the holder's Contact in a 302)
		route(FOREIGN);
	}}

	if ($rU == $null) {{
		if (is_method("OPTIONS")) {{
			sl_send_reply("200", "OK");
			exit;
		}}
		sl_send_reply("484", "Address Incomplete");
		exit;
	}}

	route(PARK);
	route(ORBIT);

	# phones (and orbit-shaped numbers in no range): registered contacts or 404
	route(LOCATION);
}}

# Per request checks: hop limit, edge keepalive, malformed requests.
route[REQINIT] {{
	force_rport();
	if (!mf_process_maxfwd_header("10")) {{
		sl_send_reply("483", "Too Many Hops");
		exit;
	}}
	if (is_method("OPTIONS") && uri == myself && $rU == $null) {{
		# keepalive addressed to the edge itself (used by callpark to wait for readiness)
		sl_send_reply("200", "Keepalive");
		exit;
	}}
{flood_block}
{acl_block}
	# the original source, for the nodes' orbit-scan limit: never trust one from outside
	# (route[SOURCE] adds ours, only on requests towards park nodes)
	if (is_present_hf("X-Callpark-Source")) {{
		cnt_inc("callpark.source_spoofed");
		remove_hf("X-Callpark-Source");
	}}
	if (!sanity_check("17895", "7")) {{
		xlog("L_WARN", "malformed SIP request from $si:$sp\\n");
		exit;
	}}
	# methods outside what the service speaks get 405 here (pjsua2 on the nodes
	# silently drops out-of-dialog requests of methods it does not know)
	if (!is_method("INVITE|ACK|BYE|CANCEL|OPTIONS|REGISTER|REFER|NOTIFY|MESSAGE|INFO|UPDATE|PRACK|SUBSCRIBE{pub}")) {{
		append_to_reply("Allow: {allow}\\r\\n");
		sl_send_reply("405", "Method Not Allowed");
		exit;
	}}
}}

# In-dialog requests follow the route set recorded at dialog creation, but only within a
# dialog the edge relayed (Call-ID and both tags; park nodes excepted): a made-up To-tag and
# Route header must not turn the edge into an unauthenticated relay.
route[WITHINDLG] {{
	if (!has_totag()) {{
		return;
	}}
{blf_indialog}	route(REFERRED_BY);
	if (loose_route()) {{
		if (!ds_is_from_list() && !is_known_dlg()) {{
			route(UNKNOWN_DIALOG);
		}}
		if (is_method("BYE")) {{
			# the dialog is over for its sender from now on (RFC 3261 15.1.1), answered or not
			$sht({ended_htable}=>$ci) = 1;
		}}
		# no failover inside a dialog: ordinary timers, even towards a node
		route(RELAY_PATIENT);
	}}
	if (is_method("ACK")) {{
		# ACK of a negative final reply: hop by hop within the INVITE transaction
		if (t_check_trans()) {{
			route(RELAY);
		}}
		exit;
	}}
	sl_send_reply("404", "Not here");
	exit;
}}

# An INVITE with Replaces of a dialog a BYE ended is declined (RFC 3891 3: 603), whoever
# sends it. A park node taking over a call whose holder died sends its INVITE/Replaces
# through here: a caller who hung up meanwhile has a BYE still unanswered (the dead holder
# never answers it, we give up after user_timeout), and pjsip accepts a Replaces of such a
# dialog, which connected callers who had hung up again (found by the chaos suite).
route[REPLACES_ENDED] {{
	if (!is_method("INVITE") || !is_present_hf("Replaces")) {{
		return;
	}}
	$var(replaced) = $(hdr(Replaces){{s.select,0,;}}{{s.trim}});
	if ($sht({ended_htable}=>$var(replaced)) != $null) {{
		xlog("L_INFO", "INVITE/Replaces of ended dialog $var(replaced) from $si:$sp declined\\n");
		{count_replaces_ended}
		sl_send_reply("603", "Declined: that call was hung up");
		exit;
	}}
}}

# A REFER without Referred-By (baresip 1.0 sends none) gets one naming its sender (its From),
# so the transferee's INVITE to the park service names the parker: the node can then tell it
# the orbit and ring it back (RFC 3892: the transferee copies Referred-By into its INVITE).
route[REFERRED_BY] {{
	if (is_method("REFER") && !is_present_hf("Referred-By")) {{
		append_hf("Referred-By: <$fu>\r\n");
	}}
}}

# An in-dialog request of no dialog the edge knows: an ACK of a negative reply goes hop by hop
# within its INVITE transaction, anything else is refused (an ACK silently) and counted.
route[UNKNOWN_DIALOG] {{
	if (is_method("ACK")) {{
		if (t_check_trans()) {{
			route(RELAY);
		}}
		cnt_inc("callpark.dialog_refused");
		exit;
	}}
	xlog("L_WARN", "in-dialog $rm from $si:$sp matches no dialog: refused\\n");
	cnt_inc("callpark.dialog_refused");
	sl_send_reply("403", "Forbidden: no such dialog");
	exit;
}}

# Digest authentication (when configured): 401 for REGISTER, 407 for everything else.
{auth_route}
{blf_routes}
# Phones register with the edge: in-memory usrloc, AOR = user part of the To URI.
route[REGISTRAR] {{
	if (!is_method("REGISTER")) {{
		return;
	}}
{register_block}
	if (!save("location")) {{
		sl_reply_error();
	}}
	exit;
}}

# Sets $var(local) = 1 when the R-URI addresses the edge: listen socket, or the SIP domain
# or edge address with no port or the edge's port. pjsip drops ports from From/To/Referred-By
# URIs, so sip:<user>@<edge address> without a port must count as local; a URI with another
# explicit port (a node's or phone's Contact) must not.
route[LOCALURI] {{
	# (an empty string assigned to a $var becomes integer 0, so test the port's length)
	$var(local) = 0;
	if (uri == myself) {{
		$var(local) = 1;
	}} else if ($rd == {domain} || $rd == {host}) {{
		if ($(ru{{uri.port}}{{s.len}}) == 0 || $(ru{{uri.port}}) == {port_str}) {{
			$var(local) = 1;
		}}
	}}
}}

# A request-URI outside the edge's domains (a park node's Contact in a 302, a phone's Contact
# in a Refer-To) is relayed only to a park node of the dispatcher list (host and port, any
# transport) or to the registered contacts of its user: the edge is no open relay. Anything
# else gets 404 and nothing is sent.
route[FOREIGN] {{
	if (ds_is_from_list("-1", "2", "$ru")) {{
		route(SOURCE);
		route(RELAY_PATIENT);
	}}
	if (!registered("location")) {{
		xlog("L_WARN", "relaying refused for $si:$sp: $rm $ru\\n");
		cnt_inc("callpark.relay_denied");
		sl_send_reply("404", "Not Found: relaying denied");
		exit;
	}}
	route(LOCATION);
}}

# park (default pool) and park-<pool> (that pool) -> the pool's dispatcher set.
route[PARK] {{
	if (!($rU =~ {park_prefix})) {{
		return;
	}}
{park_block}
	sl_send_reply("404", "No Such Park Pool");
	exit;
}}

# Orbits: optional * or # (also %2A / %23), then digits. Each range is matched on
# prefix, digit count and numeric bounds; a match goes to the range's home pool.
route[ORBIT] {{
	$var(orbit) = $(rU{{s.unescape.user}});
	# "-" stands for "no prefix" (an empty string in a $var would turn into 0)
	$var(orbit_prefix) = "-";
	$var(orbit_digits) = $var(orbit);
	if ($var(orbit) =~ "^[*#][0-9]+$") {{
		$var(orbit_prefix) = $(var(orbit){{s.substr,0,1}});
		$var(orbit_digits) = $(var(orbit){{s.substr,1,0}});
	}}
	if (!($var(orbit_digits) =~ "^[0-9]{{1,9}}$")) {{
		return;
	}}
	$var(orbit_len) = $(var(orbit_digits){{s.len}});
	$var(orbit_num) = $(var(orbit_digits){{s.int}});
{orbit_block}
	# orbit-shaped but in no range: falls through to route[LOCATION] (404 unless a phone
	# registered under that number)
}}

# Send to the pool in $var(ds_set) (round robin over its active nodes); if none is active,
# straight to the backup set $var(ds_backup) (0 = none). AVPs carry the state into the
# failure route, which may run in another process.
route[DISPATCH] {{
	$avp(ds_backup) = $var(ds_backup);
	$avp(ds_stage) = "primary";
	$avp(ds_silent) = 0;
	$avp(ds_pool) = $var(ds_pool);
	if (!ds_select_dst("$var(ds_set)", "{algorithm}")) {{
		if ($var(ds_backup) == 0 || !ds_select_dst("$var(ds_backup)", "{algorithm}")) {{
			xlog("L_WARN", "no live park node for pool $var(ds_pool) nor its backup: $rm $ru\\n");
			send_reply("503", "No Park Node Available");
			exit;
		}}
		$avp(ds_stage) = "backup";
	}}
	t_on_failure("DS_FAILOVER");
	route(SOURCE);
	route(RELAY);
}}

# X-Callpark-Source: $si for the park nodes (their orbit-scan limit), added only to requests
# going to a node (dispatched, or to a node's Contact from a 302) and not to a node's own
# requests: phones never see this internal header (orbit MESSAGE, ringback, phone calls).
route[SOURCE] {{
	if (!ds_is_from_list()) {{
		append_hf("X-Callpark-Source: $si\\r\\n");
	}}
}}

# Failover: on a local timeout, 408 or 503 try the next node of the same set, then the
# backup pool's set. Every other reply (3xx included: a node redirects retrievals to the
# holder) goes back to the caller unchanged.
failure_route[DS_FAILOVER] {{
	if (t_is_canceled()) {{
		exit;
	}}
	if (!(t_check_status("408|503") || (t_branch_timeout() && !t_branch_replied()))) {{
		exit;
	}}
	if ($avp(ds_stage) == "primary" && $avp(ds_backup) != 0 && t_check_status("503")
			&& ({etcd_trouble})) {{
		# the node cannot reach etcd: its pool's other nodes, at the same site, likely cannot
		# either, and each would spend an etcd time-out saying so; the backup pool parks now
		route(DS_TO_BACKUP);
		exit;
	}}
	if (t_branch_timeout() && !t_branch_replied()) {{
		# silent node: take it out now rather than waiting for the next probe
		ds_mark_dst("ip");
		$avp(ds_silent) = $avp(ds_silent) + 1;
		if ($avp(ds_stage) == "primary" && $avp(ds_backup) != 0 && $avp(ds_silent) >= {silent_before_backup}) {{
			# likely the whole pool is gone: do not spend one timeout per remaining node
			route(DS_TO_BACKUP);
			exit;
		}}
	}}
	if (ds_next_dst()) {{
		t_on_failure("DS_FAILOVER");
		route(RELAY);
	}}
	route(DS_TO_BACKUP);
}}

# From a failure route: relay the request to the backup pool's set, once.
route[DS_TO_BACKUP] {{
	if ($avp(ds_stage) == "primary" && $avp(ds_backup) != 0) {{
		$avp(ds_stage) = "backup";
		if (ds_select_dst("$avp(ds_backup)", "{algorithm}")) {{
			xlog("L_INFO", "pool $avp(ds_pool) failed over to backup set $avp(ds_backup): $rm $ru\\n");
			t_on_failure("DS_FAILOVER");
			route(RELAY);
		}}
	}}
}}

# Registered users: rewrite the R-URI to the contact, 404 if not registered.
route[LOCATION] {{
	if (!lookup("location")) {{
		$var(rc) = $rc;
		switch ($var(rc)) {{
			case -2:
				send_reply("405", "Method Not Allowed");
				exit;
			default:
				send_reply("404", "Not Found");
				exit;
		}}
	}}
	route(RELAY_PATIENT);
}}

# Relay with ordinary transaction timers (user_timeout / invite_timeout): phones, other
# targets, in-dialog requests. Only first tries at park nodes keep the short global
# fr_timer (node_timeout), because only there is a faster failover possible.
route[RELAY_PATIENT] {{
	if (!is_method("ACK")) {{
		t_set_fr({invite_timeout_ms}, {user_timeout_ms});
	}}
	route(RELAY);
}}

# Stateful relay; errors become a reply to the sender.
route[RELAY] {{
	if (!t_relay()) {{
		sl_reply_error();
	}}
	exit;
}}
"""
