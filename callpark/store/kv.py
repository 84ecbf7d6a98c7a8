"""The key-value contract callpark needs from etcd, as plain data types.

:class:`KV` is implemented by :class:`callpark.store.etcd.EtcdStore` (the real thing, the
only importer of the etcd client) and by :class:`callpark.store.memkv.MemoryKV` (an
in-memory fake for fast unit tests; both pass the same contract tests).

Contract:

* ``get``/``get_prefix`` are linearizable reads and return the store revision they
  were served at; they are retried on transient errors within a deadline.
  ``get_prefix(prefix, revision=R)`` reads as of revision R, so several prefixes can
  be read as one consistent snapshot. A snapshot's ``revision`` is the one it was read
  at (R when given). ``get_prefix`` has no size limit: the etcd store reads large
  ranges in pages, all at the first page's revision, so the result is one snapshot.
* ``txn`` applies its ``success`` ops if every compare holds, else its ``failure``
  ops, atomically; it is the only way to change more than one key. A txn whose
  outcome is unknown (time-out) raises :class:`~callpark.errors.StoreIndeterminate`:
  callers make writes idempotent or check a write id they wrote.
* Errors are the project's own (:mod:`callpark.errors`), never the client's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

CompareTarget = Literal["mod", "create", "version", "value", "lease"]
CompareOp = Literal["==", "!=", "<", ">"]


@dataclass(frozen=True)
class Entry:
    """One stored key with its etcd metadata."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True)
class Snapshot:
    """Keys read at one store revision."""

    revision: int
    entries: dict[str, Entry] = field(default_factory=dict)


@dataclass(frozen=True)
class Compare:
    """``target(key) op operand``; ``range_end`` makes it hold for every key of a range."""

    key: str
    target: CompareTarget
    op: CompareOp
    operand: int | bytes
    range_end: str | None = None


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str
    prefix: bool = False


Op = Put | Delete


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int


def prefix_end(prefix: str) -> str:
    """The exclusive end of the key range that holds every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    for i in range(len(raw) - 1, -1, -1):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[: i + 1]).decode("latin-1")
    return "\x00"


def absent(key: str) -> Compare:
    """The compare that holds when ``key`` does not exist."""
    return Compare(key, "create", "==", 0)


def unchanged(key: str, mod_revision: int) -> Compare:
    """The compare that holds when ``key`` was last written at ``mod_revision`` (0: absent)."""
    return Compare(key, "mod", "==", mod_revision)


class KV(Protocol):
    """What callpark needs from etcd (see the module docstring for the contract)."""

    def get(self, key: str) -> Entry | None: ...

    def get_prefix(self, prefix: str, revision: int | None = None) -> Snapshot: ...

    def txn(self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult: ...

    def grant_lease(self, ttl_s: int) -> int: ...

    def refresh_lease(self, lease_id: int) -> int: ...

    def revoke_lease(self, lease_id: int) -> None: ...

    def unreachable(self) -> bool:
        """True while the store fails requests at once after a time-out (see EtcdStore.fail_fast_s)."""
        ...

    def close(self) -> None: ...
