"""Drain requests (``drain/<pool>/<node>``): the one place a drain is started or cancelled.

``callpark dr drain`` and the node's ``POST|DELETE /api/drain`` both come here, so the node's
scan loop is the one place a drain takes effect. Both writes are idempotent: a write that
times out having applied is simply repeated by the operator (or the HTTP client) with the
same effect, and the node only ever reads whether the key exists.
"""

from __future__ import annotations

import time

from callpark.store.kv import KV, Delete, Put
from callpark.store.records import stamp_bytes
from callpark.store.schema import Keys


def request_drain(kv: KV, pool: str, node: str, *, via: str) -> None:
    """Ask ``pool/node`` to drain: it parks nothing new and its peers take its calls over."""
    kv.txn([], [Put(Keys.drain(pool, node), stamp_bytes(time.time(), via=via))])


def cancel_drain(kv: KV, pool: str, node: str) -> None:
    """End a drain: the node parks again."""
    kv.txn([], [Delete(Keys.drain(pool, node))])
