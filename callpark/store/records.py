"""Every record stored in etcd: its type, its encoder and its validating decoder, and the one
schema version.

Nodes and controllers never trust etcd's bytes: every value they read goes through a
parser that returns a typed record or raises :class:`~callpark.errors.StoreDataError`
(and nothing else: the fuzz tests hold every parser to that). :class:`RecordDecoder`
calls the parser and, on a malformed record, logs one WARNING per key and mod revision,
counts ``callpark_etcd_records_skipped_total{kind}`` once per key and revision, and
returns None so the caller skips the record and carries on.

Every writer serialises with :func:`encode` (it adds ``"v"``, the :data:`SCHEMA_VERSION`).
The records: admin configuration (``config/``), the parked call (``parked/<orbit>``), the small
``lru/``, ``drain/`` and ``history/`` records, owners, members, requests, events and the
controller leader.
"""

from __future__ import annotations

import enum
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter

from callpark.errors import StoreDataError, ValidationError
from callpark.model.admin import AdminState
from callpark.model.fields import BadField, flag, number, obj, opt_text, text, whole
from callpark.model.music import MohMeta
from callpark.model.orbits import OrbitRange, parse_orbit, validate_range_shape
from callpark.model.pools import Pool, validate_name
from callpark.model.settings import CpsSettings, parse_scope
from callpark.store.kv import Entry
from callpark.store.schema import SCHEMA_VERSION as SCHEMA_VERSION
from callpark.store.schema import Keys

log = logging.getLogger(__name__)
T = TypeVar("T")

SEEN_LIMIT = 4096  # key+revision pairs remembered for "log once"
PROBLEM_CHARS = 200  # a hostile value never floods the log
MAX_RECORD_BYTES = 64 * 1024  # every JSON record is far smaller; music chunks are not JSON


def encode(record: dict[str, Any]) -> bytes:
    """Serialise a record with the schema version."""
    return json.dumps({"v": SCHEMA_VERSION, **record}, sort_keys=True, separators=(",", ":")).encode()


def decode(key: str, raw: bytes, *, legacy_unversioned: bool = False) -> dict[str, Any]:
    """Parse a record, refusing huge values, malformed JSON, non-objects and unknown versions.

    ``legacy_unversioned`` accepts a record without ``"v"`` (``lru/``, ``drain/`` and the
    controller leader were first written without one); a ``"v"`` other than the schema version
    is always refused.
    """
    if len(raw) > MAX_RECORD_BYTES:
        raise StoreDataError(key, f"record of {len(raw)} bytes exceeds the {MAX_RECORD_BYTES}-byte limit")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise StoreDataError(key, f"not JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise StoreDataError(key, "not a JSON object")
    version = data.pop("v", None if legacy_unversioned else "missing")
    if version is not None and (version != SCHEMA_VERSION or isinstance(version, bool)):
        raise StoreDataError(key, f"unknown schema version {str(version)[:20]!r}")
    return data


class RecordKind(enum.StrEnum):
    """The ``kind`` label of the skip counter: which part of the key schema."""

    CONFIG = "config"
    PARKED = "parked"
    OWNER = "owner"
    MEMBER = "member"
    REQUEST = "request"
    DRAIN = "drain"
    LRU = "lru"
    HISTORY = "history"
    LEADER = "leader"
    EVENT = "event"


def strict(key: str, build: Callable[[], T]) -> T:
    """Run ``build`` and turn a field error into the :class:`StoreDataError` naming ``key``."""
    try:
        return build()
    except (BadField, KeyError, TypeError, ValueError, OverflowError, ValidationError) as exc:
        raise StoreDataError(key, str(exc) or exc.__class__.__name__) from None


# -- the decoder ----------------------------------------------------------------------------------


class RecordDecoder:
    """Typed records from etcd entries; malformed ones are reported once and skipped."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.skipped: Counter | None = None
        if registry is not None:
            self.skipped = Counter(
                "callpark_etcd_records_skipped_total",
                "Malformed etcd records skipped (once per key and revision), by kind",
                ["kind"],
                registry=registry,
            )
        self.counts: dict[str, int] = {}
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._lock = threading.Lock()

    def decode(self, kind: RecordKind, entry: Entry, parse: Callable[[str, bytes], T]) -> T | None:
        """``parse(key, value)``, or None after reporting the record as skipped."""
        try:
            return parse(entry.key, entry.value)
        except StoreDataError as exc:
            self.report(kind, entry.key, entry.mod_revision, exc.problem)
            return None

    def report(self, kind: RecordKind, key: str, revision: int, problem: str) -> None:
        """Log and count a skipped record, once per key and mod revision."""
        with self._lock:
            mark = (key, revision)
            if mark in self._seen:
                return
            self._seen[mark] = None
            if len(self._seen) > SEEN_LIMIT:
                self._seen.popitem(last=False)
            self.counts[kind.value] = self.counts.get(kind.value, 0) + 1
        log.warning(
            "skipping malformed %s record %r (revision %d): %s",
            kind.value,
            key[:PROBLEM_CHARS],
            revision,
            problem[:PROBLEM_CHARS],
        )
        if self.skipped is not None:
            self.skipped.labels(kind.value).inc()


DEFAULT = RecordDecoder()  # for callers without a metrics registry (the CLI)


# -- small records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stamp:
    """``lru/<orbit>`` (when the orbit was freed) and ``drain/<pool>/<node>`` (when asked)."""

    at: float


def stamp_bytes(at: float, **extra: str) -> bytes:
    """Encode an ``lru/`` or ``drain/`` record (``extra``: e.g. ``via="http"`` for a drain)."""
    return encode({"at": at, **extra})


def parse_stamp(key: str, raw: bytes) -> Stamp:
    """Parse an ``lru/`` or ``drain/`` record (also the first, unversioned ones)."""
    data = decode(key, raw, legacy_unversioned=True)
    return strict(key, lambda: Stamp(number(data, "at")))


@dataclass(frozen=True)
class History:
    """``history/<park_id>``: how a parked call ended."""

    park_id: str
    orbit: str
    outcome: str
    detail: str
    ended_at: float


def parse_history(key: str, raw: bytes) -> History:
    """Parse ``history/<park_id>``."""
    data = decode(key, raw)
    return strict(
        key,
        lambda: History(
            text(data, "park_id"),
            text(data, "orbit"),
            text(data, "outcome"),
            text(data, "detail"),
            number(data, "ended_at"),
        ),
    )


# -- the parked call ------------------------------------------------------------------------------


class ParkKind(enum.StrEnum):
    """How the call was parked (blind or directed transfer, or attended)."""

    BLIND = "blind"
    DIRECTED = "directed"
    ATTENDED = "attended"


class CallState(enum.StrEnum):
    """Where a parked call is in its life: parked, or on its way out."""

    PARKED = "parked"
    RETRIEVING = "retrieving"
    RINGING = "ringing"
    FORWARDING = "forwarding"


class Outcome(enum.StrEnum):
    """How a parked call ended (exactly one per park id)."""

    RETRIEVED = "retrieved"
    ABANDONED = "abandoned"
    RANG_BACK = "rang-back"
    FORWARDED = "forwarded"
    DISCONNECTED = "disconnected"
    LOST = "lost"


@dataclass(frozen=True)
class Dialog:
    """The holder's SIP dialog with the parked caller (what INVITE/Replaces needs)."""

    call_id: str
    local_tag: str
    remote_tag: str
    remote_contact: str
    remote_uri: str
    supports_replaces: bool

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Dialog:
        """Strict: raises ``ValueError`` (``BadField``) on a missing or mistyped field."""
        return cls(
            call_id=text(data, "call_id"),
            local_tag=text(data, "local_tag"),
            remote_tag=text(data, "remote_tag"),
            remote_contact=text(data, "remote_contact"),
            remote_uri=text(data, "remote_uri"),
            supports_replaces=flag(data, "supports_replaces"),
        )


@dataclass(frozen=True)
class Holder:
    """Which node and worker hold the call, and the worker's SIP address for redirects.

    A node is ``pool/node`` (two pools may both have an ``n1``), and ``incarnation`` tells
    one process of a node from the next (a random id per start, also in the member key).
    Records written before these fields existed have them empty: such a holder is matched by
    its bare node name, as before.
    """

    node: str
    worker: int
    sip: str  # host:port of the worker
    pool: str = ""  # the holding node's pool ("" in old records)
    incarnation: str = ""  # the holding process ("" in old records)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Holder:
        return cls(
            node=text(data, "node"),
            worker=whole(data, "worker"),
            sip=text(data, "sip"),
            pool=opt_text(data, "pool") or "",
            incarnation=opt_text(data, "incarnation") or "",
        )

    @property
    def node_id(self) -> str:
        """``pool/node`` (the bare name for an old record)."""
        return f"{self.pool}/{self.node}" if self.pool else self.node

    def member_id(self, live: Mapping[str, T]) -> str | None:
        """The ``pool/node`` of ``live`` (keyed so) that is this holder's node; None when absent."""
        if self.pool:
            return self.node_id if self.node_id in live else None
        return next((k for k in sorted(live) if k.rpartition("/")[2] == self.node), None)


@dataclass(frozen=True)
class NodeId:
    """One park node process: ``pool/name`` plus the incarnation (random per start)."""

    pool: str
    name: str
    incarnation: str = ""

    def __str__(self) -> str:
        return f"{self.pool}/{self.name}"

    def holder(self, worker: int, sip: str) -> Holder:
        """This process as the holder of a call on ``worker``."""
        return Holder(self.name, worker, sip, self.pool, self.incarnation)

    def holds(self, holder: Holder) -> bool:
        """True when ``holder`` is this node (any incarnation; an old record: by name)."""
        return holder.node == self.name and holder.pool in ("", self.pool)


@dataclass(frozen=True)
class ParkedCall:
    """One parked call. Times are wall-clock epoch seconds (they cross machines)."""

    orbit: str
    park_id: str
    pool: str
    range: str
    kind: ParkKind
    state: CallState
    holder: Holder
    dialog: Dialog
    caller_uri: str
    parker_uri: str | None
    parked_at: float
    deadline: float
    attempts: int
    owner_epoch: int = 0
    write_id: str = ""  # fresh on every write: a write that timed out is known applied when it reads back

    def to_bytes(self) -> bytes:
        """Encode ``parked/<orbit>``."""
        data = asdict(self)
        data["kind"] = self.kind.value
        data["state"] = self.state.value
        return encode(data)

    @classmethod
    def from_bytes(cls, key: str, raw: bytes) -> ParkedCall:
        """Parse ``parked/<orbit>``; anything malformed raises :class:`StoreDataError` naming the key."""
        data = decode(key, raw)
        call = strict(key, lambda: cls._from_json(data))
        if key.startswith(Keys.PARKED) and key[len(Keys.PARKED) :] != call.orbit:
            raise StoreDataError(key, f"record names orbit {call.orbit[:20]!r}, not the orbit of its key")
        return call

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> ParkedCall:
        orbit = text(data, "orbit")
        try:
            parse_orbit(orbit)
        except ValidationError as exc:
            raise ValueError(f"orbit: {exc.message}") from None
        return cls(
            orbit=orbit,
            park_id=text(data, "park_id"),
            pool=text(data, "pool"),
            range=text(data, "range"),
            kind=ParkKind(text(data, "kind")),
            state=CallState(text(data, "state")),
            holder=Holder.from_json(obj(data, "holder")),
            dialog=Dialog.from_json(obj(data, "dialog")),
            caller_uri=text(data, "caller_uri"),
            parker_uri=opt_text(data, "parker_uri"),
            parked_at=number(data, "parked_at"),
            deadline=number(data, "deadline"),
            attempts=whole(data, "attempts"),
            owner_epoch=whole(data, "owner_epoch", default=0),
            write_id=opt_text(data, "write_id") or "",
        )

    def with_state(self, state: CallState) -> ParkedCall:
        """The same call in ``state``."""
        return replace(self, state=state)

    def summary(self, now: float) -> dict[str, Any]:
        """What operators see of a parked call (``parked list``, ``/api/parked``)."""
        return {
            "orbit": self.orbit,
            "park_id": self.park_id,
            "state": self.state.value,
            "caller": self.caller_uri,
            "parker": self.parker_uri,
            "parked_for_s": round(now - self.parked_at, 1),
            "next_ringback_in_s": round(self.deadline - now, 1),
            "ringbacks": self.attempts,
            "holder": f"{self.holder.node_id}/w{self.holder.worker}",
            "pool": self.pool,
        }


def history_bytes(call: ParkedCall, outcome: Outcome, detail: str, ended_at: float, node: str) -> bytes:
    """Encode ``history/<park_id>``: how ``call`` ended, written when ``node`` (``pool/name``)
    freed its orbit; ``incarnation`` is the freeing process (the holder's, "" in old records)."""
    return encode(
        {
            "park_id": call.park_id,
            "orbit": call.orbit,
            "outcome": outcome.value,
            "detail": detail,
            "parked_at": call.parked_at,
            "ended_at": ended_at,
            "attempts": call.attempts,
            "node": node,
            "incarnation": call.holder.incarnation,
        }
    )


# -- disaster recovery: owners, members, requests, events, the leader ------------------------------


@dataclass(frozen=True)
class Owner:
    """Which pool serves a range, since which epoch; ``mod_revision`` is the fencing token."""

    range: str
    pool: str
    epoch: int
    mod_revision: int = 0
    reason: str = ""
    home: str = ""  # the range's home pool when this owner was written ("" in old records)

    def to_bytes(self) -> bytes:
        """Encode ``owners/<range>`` (``mod_revision`` is etcd's, not stored)."""
        data = {"range": self.range, "pool": self.pool, "epoch": self.epoch, "reason": self.reason}
        if self.home:
            data["home"] = self.home
        return encode(data)

    def home_when_written(self) -> str | None:
        """The home pool the owner was written for; for old records only a first assignment tells."""
        if self.home:
            return self.home
        return self.pool if self.epoch == 1 else None

    @classmethod
    def from_entry(cls, key: str, raw: bytes, mod_revision: int) -> Owner:
        """Parse ``owners/<range>``; anything malformed raises :class:`StoreDataError`."""
        data = decode(key, raw)
        owner = strict(
            key,
            lambda: cls(
                text(data, "range"),
                validate_name("pool", text(data, "pool")),
                whole(data, "epoch", minimum=1),
                mod_revision,
                str(data.get("reason", ""))[:500],
                validate_name("pool", text(data, "home")) if "home" in data else "",
            ),
        )
        if key.startswith(Keys.OWNERS) and key[len(Keys.OWNERS) :] != owner.range:
            raise StoreDataError(key, "record names another range than its key")
        return owner


@dataclass(frozen=True)
class Member:
    """A live park node (its member key exists only while its lease is alive)."""

    pool: str
    node: str
    ready: bool
    draining: bool
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def node_id(self) -> str:
        """``pool/node``, the node's identity (two pools may both have an ``n1``)."""
        return f"{self.pool}/{self.node}"

    @property
    def incarnation(self) -> str:
        """The process that holds the key now ("" from a node that does not publish it)."""
        value = self.info.get("incarnation", "")
        return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class Request:
    """An operator's request to the controller (``requests/<id>``)."""

    key: str
    action: str  # failover | failback
    pool: str
    mod_revision: int


def member_bytes(pool: str, node: str, info: Mapping[str, Any]) -> bytes:
    """Encode ``members/<pool>/<node>``: the node's name and pool plus what it publishes."""
    return encode({"node": node, "pool": pool, **info})


def parse_member(key: str, raw: bytes) -> Member:
    """Parse ``members/<pool>/<node>``: ready and draining flags, worker addresses."""
    rest = key[len(Keys.MEMBERS) :] if key.startswith(Keys.MEMBERS) else key
    pool, slash, node = rest.partition("/")
    if not slash or not pool or not node:
        raise StoreDataError(key, "member key is not members/<pool>/<node>")
    data = decode(key, raw)

    def build() -> Member:
        workers = data.get("workers", [])
        if not isinstance(workers, list) or not all(isinstance(w, dict) for w in workers):
            raise ValueError("workers must be a list of objects")
        for worker in workers:
            text(worker, "sip")
            whole(worker, "free", minimum=-(2**31))
        return Member(pool, node, flag(data, "ready"), flag(data, "draining"), data)

    return strict(key, build)


def member_placeholder(entry: Entry) -> Member | None:
    """A member whose record is malformed: its key exists, so its lease (liveness) is real,
    but nothing it says is trusted: not ready, not draining, no workers."""
    pool, slash, node = entry.key[len(Keys.MEMBERS) :].partition("/")
    return Member(pool, node, False, False, {}) if slash and pool and node else None


def parse_members(entries: dict[str, Entry], decoder: RecordDecoder = DEFAULT) -> dict[str, list[Member]]:
    """Members by pool; a malformed record is reported and kept as a not-ready placeholder."""
    members: dict[str, list[Member]] = {}
    for _key, entry in sorted(entries.items()):
        member = decoder.decode(RecordKind.MEMBER, entry, parse_member) or member_placeholder(entry)
        if member is not None:
            members.setdefault(member.pool, []).append(member)
    return members


def request_bytes(action: str, pool: str, at: float) -> bytes:
    """Encode ``requests/<time>-<action>-<pool>``."""
    return encode({"action": action, "pool": pool, "at": at})


def parse_request(key: str, raw: bytes, mod_revision: int = 0) -> Request:
    """Parse an operator's request; ``mod_revision`` guards its consumption."""
    data = decode(key, raw)
    return strict(key, lambda: Request(key, text(data, "action"), text(data, "pool"), mod_revision))


def leader_bytes(name: str, pid: int, since: float) -> bytes:
    """Encode ``controller/leader``: who leads, in which process, since when (wall clock)."""
    return encode({"name": name, "pid": pid, "since": since})


def parse_leader(key: str, raw: bytes) -> dict[str, Any]:
    """Parse ``controller/leader`` (also the first, unversioned records)."""
    data = decode(key, raw, legacy_unversioned=True)

    def build() -> dict[str, Any]:
        info: dict[str, Any] = {"name": text(data, "name")[:128], "pid": whole(data, "pid", default=0)}
        if "since" in data:
            info["since"] = number(data, "since")
        return info

    return strict(key, build)


def move_event_bytes(
    kind: str,
    *,
    pool: str,
    to: str,
    ranges: list[str],
    epochs: dict[str, int],
    parked_calls: int,
    why: str,
    leader: str,
    token: int,
    request: str | None,
    at: float,
) -> bytes:
    """Encode the ``events/`` record of a range move (failover, failback, re-homing)."""
    return encode(
        {
            "at": at,
            "kind": kind,
            "pool": pool,
            "to": to,
            "ranges": ranges,
            "epochs": epochs,
            "parked_calls": parked_calls,
            "why": why,
            "leader": leader,
            "token": token,
            "request": request,
        }
    )


def refusal_event_bytes(*, pool: str, action: str, why: str, leader: str, request: str, at: float) -> bytes:
    """Encode the ``events/`` record of an operator request the leader refused."""
    return encode(
        {"at": at, "kind": "refused", "pool": pool, "action": action, "why": why, "leader": leader, "request": request}
    )


def parse_event(key: str, raw: bytes) -> dict[str, Any]:
    """Parse ``events/<time>-<id>``: any object with a finite ``at``."""
    data = decode(key, raw)
    strict(key, lambda: number(data, "at"))
    return data


# -- admin configuration (config/) ----------------------------------------------------------------


def parse_moh_meta(key: str, raw: bytes) -> MohMeta:
    """Parse ``config/moh/<pool>``: the metadata of a pool's music."""
    data = decode(key, raw)
    return strict(key, lambda: MohMeta.from_json(data))


def parse_state(
    entries: Mapping[str, bytes], *, on_malformed: Callable[[str, StoreDataError], None] | None = None
) -> AdminState:
    """Decode ``config/`` keys; a malformed record raises :class:`StoreDataError` naming its key.

    With ``on_malformed`` (nodes, controllers) a malformed record is handed to it and
    left out instead, so one bad record never stops a service.
    """
    pools: dict[str, Pool] = {}
    ranges: dict[str, OrbitRange] = {}
    cps: dict[str, CpsSettings] = {}
    moh: dict[str, MohMeta] = {}
    for key, raw in entries.items():
        if key == Keys.CONFIG_SERIAL:
            continue
        try:
            _parse_record(key, raw, pools, ranges, cps, moh)
        except StoreDataError as exc:
            if on_malformed is None:
                raise
            on_malformed(key, exc)
    return AdminState(pools, ranges, cps, moh)


def _parse_record(
    key: str,
    raw: bytes,
    pools: dict[str, Pool],
    ranges: dict[str, OrbitRange],
    cps: dict[str, CpsSettings],
    moh: dict[str, MohMeta],
) -> None:
    data = decode(key, raw)
    try:
        if key.startswith(Keys.POOLS):
            name = key[len(Keys.POOLS) :]
            pool = Pool.from_json(data)
            if pool.name != name:
                raise ValueError(f"pool record names {pool.name!r}, not the pool of its key")
            pools[name] = pool
        elif key.startswith(Keys.RANGES):
            name = key[len(Keys.RANGES) :]
            rng = validate_range_shape(OrbitRange.from_json(data))
            if rng.name != name:
                raise ValueError(f"range record names {rng.name[:40]!r}, not the range of its key")
            ranges[name] = rng
        elif key.startswith(Keys.CPS):
            scope = key[len(Keys.CPS) :]
            if parse_scope(scope) != scope:
                raise ValueError("settings scope in the key is not normalised")
            cps[scope] = CpsSettings.from_json(data)
        elif key.startswith(Keys.MOH):
            moh[key[len(Keys.MOH) :]] = MohMeta.from_json(data)
    except (KeyError, TypeError, ValueError, OverflowError, ValidationError) as exc:
        raise StoreDataError(key, f"{exc.__class__.__name__}: {str(exc)[:200]}") from None
