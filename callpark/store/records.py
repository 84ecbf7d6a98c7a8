"""The one validating decoder for records read from etcd: a typed record or a reported skip.

Nodes and controllers never trust etcd's bytes: every value they read goes through a
parser that returns a typed record or raises :class:`~callpark.errors.StoreDataError`
(and nothing else: the fuzz tests hold every parser to that). :class:`RecordDecoder`
calls the parser and, on a malformed record, logs one WARNING per key and mod revision,
counts ``callpark_etcd_records_skipped_total{kind}`` once per key and revision, and
returns None so the caller skips the record and carries on.

This module also holds the field checks the record parsers share and the parsers of
the small records (``lru/``, ``drain/``, ``history/``).
"""

from __future__ import annotations

import enum
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter

from callpark.errors import StoreDataError, ValidationError
from callpark.store.etcd import decode
from callpark.store.kv import Entry

log = logging.getLogger(__name__)
T = TypeVar("T")

SEEN_LIMIT = 4096  # key+revision pairs remembered for "log once"
PROBLEM_CHARS = 200  # a hostile value never floods the log


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


class BadField(ValueError):
    """A field of a record is missing or of the wrong type (becomes a StoreDataError)."""


# -- field checks shared by the record parsers ------------------------------------------------


def text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise BadField(f"{name} must be a string")
    return value


def opt_text(data: Mapping[str, Any], name: str) -> str | None:
    return None if data.get(name) is None else text(data, name)


def whole(data: Mapping[str, Any], name: str, default: int | None = None, minimum: int = 0) -> int:
    value = data.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum or value > 2**62:
        raise BadField(f"{name} must be a whole number >= {minimum}")
    return value


def number(data: Mapping[str, Any], name: str) -> float:
    value = data.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise BadField(f"{name} must be a finite number")
    return float(value)


def flag(data: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise BadField(f"{name} must be true or false")
    return value


def obj(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    if not isinstance(value, dict):
        raise BadField(f"{name} must be an object")
    return value


def strict(key: str, build: Callable[[], T]) -> T:
    """Run ``build`` and turn a field error into the :class:`StoreDataError` naming ``key``."""
    try:
        return build()
    except (BadField, KeyError, TypeError, ValueError, OverflowError, ValidationError) as exc:
        raise StoreDataError(key, str(exc) or exc.__class__.__name__) from None


# -- small records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stamp:
    """``lru/<orbit>`` (when the orbit was freed) and ``drain/<pool>/<node>`` (when asked)."""

    at: float


def parse_stamp(key: str, raw: bytes) -> Stamp:
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
