"""A worker that died while the node decided its request gets no reply, and what the node wrote
for it is undone (real etcd through FaultKV, in-process node parts).

The reply used to go to the handle's channel, which by then is the restarted worker's: that worker
numbers its requests from 1 again, so it could take the dead worker's answer for its own
request (answer a new caller with another call's orbit); and the orbit allocated for a caller who
died with the worker stayed parked with nobody behind it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from callpark.node.dispatch import Dispatcher
from callpark.node.notify import ParkerNotices
from callpark.node.ringback import Ringback
from callpark.node.takeover import Takeovers
from callpark.store.etcd import EtcdStore
from tests.node.faults import FaultKV
from tests.node.test_decisions import make_node, park_msg, retrieve_msg
from tests.node.test_lifecycle import listen, parked


@pytest.fixture
def kv(etcd: EtcdStore) -> FaultKV:
    return FaultKV(etcd)


def dispatcher(node: Any) -> Dispatcher:
    return Dispatcher(
        node.calls.ctx,
        calls=node.calls,
        decisions=node.decisions,
        ringback=cast(Ringback, None),
        takeovers=cast(Takeovers, None),
        notices=ParkerNotices(node.calls.ctx, on_timeout_uri=lambda: None),
    )


def test_a_park_decided_after_its_worker_died_is_not_answered_and_its_orbit_is_freed(
    tmp_path: Path, kv: FaultKV
) -> None:
    node = make_node(tmp_path, kv)
    w = node.w0
    w.generation = 2  # the worker that asked (generation 1) died and was restarted meanwhile
    sent = listen(w)
    dispatcher(node).on_message(w, {**park_msg(req=1), "generation": 1})
    assert sent.ops("reply") == []  # the restarted worker never asked: request 1 is not its
    assert not node.calls.held
    assert all(parked(node, o) is None for o in ("7000", "7001"))


def test_a_park_of_the_live_worker_is_answered(tmp_path: Path, kv: FaultKV) -> None:
    node = make_node(tmp_path, kv)
    w = node.w0
    w.generation = 2
    sent = listen(w)
    dispatcher(node).on_message(w, {**park_msg(req=1), "generation": 2})
    assert [r["action"] for r in sent.ops("reply")] == ["answer"]


def test_a_retrieval_decided_after_its_worker_died_leaves_the_call_parked(tmp_path: Path, kv: FaultKV) -> None:
    node = make_node(tmp_path, kv)
    w = node.w0
    orbit = str(node.decisions.park(w, park_msg()).fields["orbit"])
    w.generation = 2  # the retriever's worker died while the claim was written
    sent = listen(w)
    dispatcher(node).on_message(w, {**retrieve_msg(orbit), "generation": 1})
    assert sent.ops("reply") == []
    record = parked(node, orbit)
    assert record is not None and record["state"] == "parked"  # not "retrieving": later retrievals work
