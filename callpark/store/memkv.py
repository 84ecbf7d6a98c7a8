"""An in-memory :class:`~callpark.store.kv.KV` with etcd's revision and lease semantics.

For fast unit tests only; the same contract tests run against real etcd.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from callpark.errors import StoreError
from callpark.store.kv import Compare, Delete, Entry, Op, Put, Snapshot, TxnResult, prefix_end


class MemoryKV:
    """A single-process fake of etcd's KV, txn and lease API."""

    def __init__(self) -> None:
        self._data: dict[str, Entry] = {}
        self._revision = 1
        self._leases: dict[int, tuple[int, float]] = {}
        self._next_lease = 1000
        self._lock = threading.RLock()

    def get(self, key: str) -> Entry | None:
        with self._lock:
            self._expire()
            return self._data.get(key)

    def get_prefix(self, prefix: str, revision: int | None = None) -> Snapshot:
        with self._lock:
            self._expire()
            if revision is not None and revision != self._revision:
                raise StoreError("the in-memory store keeps no history: read at the current revision only")
            return Snapshot(self._revision, {k: e for k, e in sorted(self._data.items()) if k.startswith(prefix)})

    def txn(self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        with self._lock:
            self._expire()
            ok = all(self._holds(c) for c in compares)
            ops = success if ok else failure
            for op in ops:
                if isinstance(op, Put) and op.lease and op.lease not in self._leases:
                    raise StoreError(f"etcd refused the transaction: lease {op.lease} not found")
            if any(isinstance(op, Put) for op in ops) or any(
                self._matching(op) for op in ops if isinstance(op, Delete)
            ):
                self._revision += 1
                for op in ops:
                    self._apply(op)
            return TxnResult(ok, self._revision)

    def grant_lease(self, ttl_s: int) -> int:
        with self._lock:
            self._next_lease += 1
            self._leases[self._next_lease] = (ttl_s, time.monotonic() + ttl_s)
            return self._next_lease

    def refresh_lease(self, lease_id: int) -> int:
        with self._lock:
            self._expire()
            if lease_id not in self._leases:
                return -1
            ttl, _ = self._leases[lease_id]
            self._leases[lease_id] = (ttl, time.monotonic() + ttl)
            return ttl

    def revoke_lease(self, lease_id: int) -> None:
        with self._lock:
            self._leases.pop(lease_id, None)
            self._drop_lease_keys({lease_id})

    def unreachable(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def _holds(self, c: Compare) -> bool:
        keys = [k for k in self._data if c.key <= k < c.range_end] if c.range_end is not None else [c.key]
        return all(self._holds_one(c, self._data.get(k)) for k in keys)

    @staticmethod
    def _holds_one(c: Compare, e: Entry | None) -> bool:
        actual: int | bytes
        if c.target == "value":
            if e is None:
                return False
            actual = e.value
        else:
            actual = {
                "mod": 0 if e is None else e.mod_revision,
                "create": 0 if e is None else e.create_revision,
                "version": 0 if e is None else e.version,
                "lease": 0 if e is None else e.lease,
            }[c.target]
        if type(actual) is not type(c.operand):
            raise StoreError(f"compare {c} mixes types")
        a, b = actual, c.operand
        if c.op == "==":
            return a == b
        if c.op == "!=":
            return a != b
        if c.op == "<":
            return a < b  # type: ignore[operator]
        return a > b  # type: ignore[operator]

    def _matching(self, op: Delete) -> list[str]:
        if op.prefix:
            end = prefix_end(op.key)
            return [k for k in self._data if op.key <= k < end]
        return [op.key] if op.key in self._data else []

    def _apply(self, op: Op) -> None:
        if isinstance(op, Put):
            old = self._data.get(op.key)
            self._data[op.key] = Entry(
                op.key,
                op.value,
                create_revision=old.create_revision if old else self._revision,
                mod_revision=self._revision,
                version=(old.version if old else 0) + 1,
                lease=op.lease,
            )
        else:
            for k in self._matching(op):
                del self._data[k]

    def _expire(self) -> None:
        now = time.monotonic()
        dead = {lid for lid, (_, exp) in self._leases.items() if exp <= now}
        for lid in dead:
            del self._leases[lid]
        if dead:
            self._revision += 1
            self._drop_lease_keys(dead)

    def _drop_lease_keys(self, lease_ids: set[int]) -> None:
        for k in [k for k, e in self._data.items() if e.lease in lease_ids]:
            del self._data[k]
