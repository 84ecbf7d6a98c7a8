"""gRPC failures: a write that may have reached etcd is never retried, reads are; keepalives pass fail-fast."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from callpark.errors import StoreIndeterminate, StoreUnavailable
from callpark.lab.etcd import LocalEtcdCluster
from callpark.store.etcd import EtcdStore
from callpark.store.kv import Put

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE

# (status, details as grpc and etcd word them, whether the request cannot have left this client)
FAILURES = [
    (
        UNAVAILABLE,
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:2379: "
        "Failed to connect to remote host: Connection refused",
        True,
    ),
    (
        UNAVAILABLE,
        "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:2379: Connection reset by peer",
        True,
    ),  # the connection never came up: the call was never written
    (UNAVAILABLE, "Connection refused", True),
    (UNAVAILABLE, "DNS resolution failed for etcd-0.invalid:2379: C-ares status is not ARES_SUCCESS", True),
    (UNAVAILABLE, "Name resolution failure", True),
    (UNAVAILABLE, "Connection reset by peer", False),
    (UNAVAILABLE, "recvmsg:Connection reset by peer", False),
    (UNAVAILABLE, "Broken pipe", False),
    (UNAVAILABLE, "Socket closed", False),
    (UNAVAILABLE, "GOAWAY received", False),
    (UNAVAILABLE, "etcdserver: request timed out, possibly due to connection lost", False),
    (UNAVAILABLE, "etcdserver: leader changed", False),
    (UNAVAILABLE, "", False),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", False),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "failed to connect to all addresses", False),
    (grpc.StatusCode.INTERNAL, "Received RST_STREAM with error code 2", False),
    (grpc.StatusCode.UNKNOWN, "etcdserver: request timed out", False),
]
IDS = [f"{code.name}-{detail[:40] or 'empty'}" for code, detail, _ in FAILURES]


class FakeRpcError(grpc.RpcError):  # type: ignore[misc]  # grpc has no type stubs
    def __init__(self, code: grpc.StatusCode, detail: str) -> None:
        super().__init__(detail)
        self._code, self._detail = code, detail

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._detail


class FailingStub:
    """Stands for every gRPC stub: each call raises the same error and is counted."""

    def __init__(self, error: grpc.RpcError) -> None:
        self.error, self.calls = error, 0

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            raise self.error

        return call


@pytest.fixture
def offline() -> Iterator[EtcdStore]:
    """A store whose requests all go to a :class:`FailingStub` (the channel is never used)."""
    store = EtcdStore(["http://127.0.0.1:9"], request_timeout_s=0.1, retry_deadline_s=0.3)
    try:
        yield store
    finally:
        store.close()


def _failing(store: EtcdStore, monkeypatch: pytest.MonkeyPatch, code: grpc.StatusCode, detail: str) -> FailingStub:
    stub = FailingStub(FakeRpcError(code, detail))
    monkeypatch.setattr(store, "_stub", lambda name: stub)
    return stub


@pytest.mark.parametrize(("code", "detail", "unsent"), FAILURES, ids=IDS)
def test_never_sent_only_when_the_request_cannot_have_left(code: grpc.StatusCode, detail: str, unsent: bool) -> None:
    from callpark.store.etcd import never_sent

    assert never_sent(code, detail) is unsent


@pytest.mark.parametrize(("code", "detail", "unsent"), FAILURES, ids=IDS)
def test_a_txn_is_retried_only_when_never_sent(
    offline: EtcdStore, monkeypatch: pytest.MonkeyPatch, code: grpc.StatusCode, detail: str, unsent: bool
) -> None:
    stub = _failing(offline, monkeypatch, code, detail)
    if unsent:
        with pytest.raises(StoreUnavailable):
            offline.txn([], [Put("/t/k", b"v")])
        assert stub.calls > 1, "a request that never left may be sent again"
    else:
        with pytest.raises(StoreIndeterminate, match="outcome unknown"):
            offline.txn([], [Put("/t/k", b"v")])
        assert stub.calls == 1, "a write that may have applied must not be sent again"


@pytest.mark.parametrize(("code", "detail", "unsent"), FAILURES, ids=IDS)
def test_reads_are_retried_whatever_happened(
    offline: EtcdStore, monkeypatch: pytest.MonkeyPatch, code: grpc.StatusCode, detail: str, unsent: bool
) -> None:
    stub = _failing(offline, monkeypatch, code, detail)
    with pytest.raises(StoreUnavailable):
        offline.get("/t/k")
    assert stub.calls > 1


def test_a_txn_cut_off_in_flight_by_a_killed_etcd_is_indeterminate(tmp_path: Path) -> None:
    """etcd is stopped with the txn in its socket, then killed: the client sees the connection
    reset, after the request was sent. That is "outcome unknown", not "never sent"."""
    with LocalEtcdCluster(tmp_path, members=1) as cluster:
        store = EtcdStore.connect(cluster.endpoints, request_timeout_s=10.0, retry_deadline_s=3.0)
        try:
            store.txn([], [Put("/t/warm", b"up")])  # the connection is up
            cluster.pause(0)
            outcome: list[BaseException | None] = []

            def write() -> None:
                try:
                    store.txn([], [Put("/t/k", b"v")])
                    outcome.append(None)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    outcome.append(exc)

            writer = threading.Thread(target=write)
            writer.start()
            time.sleep(0.5)  # the txn is sent and waits in the stopped etcd's socket
            cluster.kill(0)
            writer.join(15)
            assert outcome, "the txn did not return"
            assert isinstance(outcome[0], StoreIndeterminate), repr(outcome[0])
        finally:
            store.close()


def test_keepalives_pass_the_fail_fast_window_while_reads_still_fail_fast(tmp_path: Path) -> None:
    with LocalEtcdCluster(tmp_path, members=1) as cluster:
        store = EtcdStore.connect(cluster.endpoints, request_timeout_s=0.3, retry_deadline_s=2.0, fail_fast_s=60.0)
        try:
            lease = store.grant_lease(30)
            store.txn([], [Put("/t/held", b"x", lease=lease)])
            cluster.pause(0)
            try:
                with pytest.raises(StoreUnavailable):
                    store.get("/t/held")  # a real time-out trips fail-fast
            finally:
                cluster.resume(0)
            assert store.unreachable()
            time.sleep(1.2)  # the client marks a timed-out endpoint failed for 1 s
            assert store.refresh_lease(lease) == 30, "the keepalive must reach etcd"
            with pytest.raises(StoreUnavailable, match="failing fast"):
                store.get("/t/held")
            assert store.unreachable(), "a keepalive answered does not end the window for other requests"
            store.revoke_lease(lease)
            assert store.refresh_lease(lease) == -1
            with pytest.raises(StoreUnavailable, match="failing fast"):
                store.get("/t/held")
            store.fail_fast_s = 0.0
            store._down_until = 0.0  # as if the window had passed
            assert store.get("/t/held") is None, "the revoke reached etcd and took the lease's key"
        finally:
            store.close()
