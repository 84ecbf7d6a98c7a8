"""Fault injection for node tests: a KV wrapper whose writes time out, before or after applying."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from callpark.errors import StoreIndeterminate, StoreUnavailable
from callpark.store.kv import KV, Compare, Entry, Op, Put, Snapshot, TxnResult

Match = Callable[[Sequence[Op]], bool]


def puts(key: str, containing: bytes = b"") -> Match:
    """Matches a txn that writes ``key`` with a value containing ``containing``."""
    return lambda ops: any(isinstance(op, Put) and op.key == key and containing in op.value for op in ops)


@dataclass
class Fault:
    match: Match
    applied: bool  # the write reaches etcd before the time-out


class FaultKV:
    """Wraps a real store: planned txns raise :class:`StoreIndeterminate` (after or before
    applying), ``reads_failing`` reads raise :class:`StoreUnavailable`, ``down`` fails everything,
    ``cut`` is what :meth:`unreachable` says."""

    def __init__(self, inner: KV) -> None:
        self.inner = inner
        self.faults: list[Fault] = []
        self.reads_failing = 0
        self._reads_after = 0
        self.down = False
        self.cut = False

    def time_out(self, match: Match, *, applied: bool, then_reads_fail: int = 0) -> None:
        """The next txn ``match`` accepts times out (having applied or not); then reads fail."""
        self.faults.append(Fault(match, applied))
        self._reads_after = then_reads_fail

    def _read(self) -> None:
        if self.down:
            raise StoreUnavailable("injected: etcd down")
        if self.reads_failing > 0:
            self.reads_failing -= 1
            raise StoreUnavailable("injected: read failed")

    def get(self, key: str) -> Entry | None:
        self._read()
        return self.inner.get(key)

    def get_prefix(self, prefix: str, revision: int | None = None) -> Snapshot:
        self._read()
        return self.inner.get_prefix(prefix, revision)

    def txn(self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        if self.down:
            raise StoreUnavailable("injected: etcd down")
        fault = next((f for f in self.faults if f.match(success)), None)
        if fault is None:
            return self.inner.txn(compares, success, failure)
        self.faults.remove(fault)
        if fault.applied:
            self.inner.txn(compares, success, failure)
        self.reads_failing = self._reads_after
        raise StoreIndeterminate(f"injected: txn timed out ({'applied' if fault.applied else 'not applied'})")

    def grant_lease(self, ttl_s: int) -> int:
        if self.down:
            raise StoreUnavailable("injected: etcd down")
        return self.inner.grant_lease(ttl_s)

    def refresh_lease(self, lease_id: int) -> int:
        if self.down:
            raise StoreUnavailable("injected: etcd down")
        return self.inner.refresh_lease(lease_id)

    def revoke_lease(self, lease_id: int) -> None:
        self.inner.revoke_lease(lease_id)

    def unreachable(self) -> bool:
        return self.cut

    def close(self) -> None:
        self.inner.close()
