"""Floors measured in the same run, so every figure can be read as a ratio to this machine.

- ``etcd_guarded_put``: one txn that compares a key's mod revision and puts it (what every
  park, claim and free costs at least), sequential, over the bench's own etcd client.
- ``phone_to_phone_setup`` (harness phase): INVITE to CONFIRMED between two phones with no
  node, the floor of any SIP call set-up with these processes.
"""

from __future__ import annotations

import time
from typing import Any

from bench.stats import Summary
from callpark.store.etcd import EtcdStore
from callpark.store.kv import Compare, Delete, Put

FLOOR_KEY = "/bench-floor/guarded-put"


def etcd_guarded_put(store: EtcdStore, samples: int) -> dict[str, Any]:
    """``samples`` guarded puts (compare mod revision, put), one after another."""
    store.txn([], [Put(FLOOR_KEY, b"0")])
    entry = store.get(FLOOR_KEY)
    assert entry is not None
    revision = entry.mod_revision
    took: list[float] = []
    for i in range(samples):
        began = time.perf_counter()
        result = store.txn([Compare(FLOOR_KEY, "mod", "==", revision)], [Put(FLOOR_KEY, str(i).encode())])
        took.append(time.perf_counter() - began)
        if not result.succeeded:
            raise RuntimeError("the floor key changed under the bench")
        revision = result.revision
    store.txn([], [Delete(FLOOR_KEY)])
    return Summary.of_seconds(took).as_dict()
