"""Per-node and per-controller etcd identities on a real TLS + auth etcd: each may write only
what it owns (RBAC scoped by key), and a real node and controller do their work with them."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from callpark.errors import StoreAuthError
from callpark.lab.controllerproc import ControllerProcess
from callpark.lab.etcd import LocalEtcdCluster
from callpark.lab.nodeproc import NodeProcess
from callpark.lab.phone import Phone
from callpark.lab.phone.flows import blind_park, connected_call, talking
from callpark.model import admin
from callpark.model.orbits import OrbitRange
from callpark.store.access import EtcdAccess
from callpark.store.admin import AdminStore
from callpark.store.etcd import EtcdStore
from callpark.store.identities import (
    Grant,
    controller_grants,
    controller_user,
    create_identity,
    node_grants,
    node_user,
)
from callpark.store.kv import Delete, Put
from callpark.store.schema import Keys
from callpark.waiting import wait_until
from tests.conftest import run_console


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcdCluster]:
    cluster = LocalEtcdCluster(tmp_path_factory.mktemp("identities-etcd"), members=1, tls=True, auth=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def identity(cluster: LocalEtcdCluster, user: str, grants: tuple[Grant, ...]) -> EtcdAccess:
    """Create ``user`` (as root) and return its access: the cluster's TLS files, a password file."""
    password = secrets.token_urlsafe(18)
    path = cluster.secrets_dir / f"{user}.password"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    root = EtcdStore.connect(cluster.access("root"))
    try:
        create_identity(root, user, password, grants)
    finally:
        root.close()
    return replace(cluster.access(), user=user, password_file=str(path))


def writes(store: EtcdStore, key: str) -> bool:
    """Whether ``store``'s identity may put (and delete) ``key``; only a permission error is False."""
    try:
        store.txn([], [Put(key, b"{}")])
        store.txn([], [Delete(key)])
    except StoreAuthError as exc:
        assert "permission denied" in str(exc), exc
        return False
    return True


def test_a_node_identity_writes_only_its_own_keys_and_parked_calls(secure: LocalEtcdCluster) -> None:
    store = EtcdStore.connect(identity(secure, node_user("pool-a", "n1"), node_grants("pool-a", "n1")))
    try:
        assert store.get_prefix(Keys.ROOT) is not None  # reads everything
        for key in (Keys.member("pool-a", "n1"), Keys.drain("pool-a", "n1"), Keys.parked("7001"), Keys.lru("7001")):
            assert writes(store, key), key
        assert writes(store, Keys.history("0123456789abcdef"))
        refused = [
            Keys.member("pool-a", "n2"),  # another node of its pool
            Keys.member("pool-b", "n1"),  # another pool's node
            Keys.drain("pool-b", "n1"),
            Keys.owner("a-park"),  # only the controller moves ranges
            Keys.LEADER,
            Keys.event(1, "x"),
            Keys.request(1, "failover", "pool-a"),
            Keys.pool("pool-a"),  # admin configuration
            Keys.CONFIG_SERIAL,
            Keys.moh_chunk("pool-a", "0" * 64, 0),
            "/other-app/key",  # outside callpark
        ]
        assert [k for k in refused if writes(store, k)] == []
    finally:
        store.close()


def test_a_controller_identity_writes_ownership_not_calls_or_config(secure: LocalEtcdCluster) -> None:
    store = EtcdStore.connect(identity(secure, controller_user("c-test"), controller_grants()))
    try:
        for key in (Keys.owner("a-park"), Keys.LEADER, Keys.event(1, "x"), Keys.request(1, "failover", "p")):
            assert writes(store, key), key
        refused = [Keys.parked("7001"), Keys.member("pool-a", "n1"), Keys.pool("pool-a"), Keys.drain("pool-a", "n1")]
        assert [k for k in refused if writes(store, k)] == []
    finally:
        store.close()


def test_a_node_and_a_controller_run_on_their_own_identities(secure: LocalEtcdCluster, tmp_path: Path) -> None:
    """The grants are enough: the controller assigns owners, the node joins, parks and frees a
    call, all under identities that cannot touch admin configuration."""
    root = EtcdStore.connect(secure.access("root"))
    procs: list[NodeProcess | ControllerProcess] = []
    phones: list[Phone] = []
    try:
        config = AdminStore(root)
        config.change(lambda s: admin.new_pool(s, "pool-i", "site-i"))
        config.change(lambda s: admin.new_range(s, OrbitRange("i-park", "7100", "7109", "pool-i")))
        c_access = identity(secure, controller_user("c-i"), controller_grants())
        procs.append(ControllerProcess(etcd=c_access, name="c-i", run_dir=tmp_path))
        procs[-1].start()
        wait_until(
            lambda: root.get(Keys.owner("i-park")) is not None,
            timeout=20,
            what="the controller (own identity) to assign the range's owner",
        )
        n_access = identity(secure, node_user("pool-i", "n1"), node_grants("pool-i", "n1"))
        node = NodeProcess(etcd=n_access, pool="pool-i", name="n1", run_dir=tmp_path / "n1")
        procs.append(node)
        node.start()
        parker = Phone("parker", log_dir=tmp_path / "phones")
        alice = Phone("alice", log_dir=tmp_path / "phones", auto_answer=True)
        carol = Phone("carol", log_dir=tmp_path / "phones")
        phones += [parker, alice, carol]
        for phone in phones:
            phone.start()
        blind_park(parker, alice, node.park_uri())
        record = wait_until(lambda: root.get(Keys.parked("7100")), timeout=10, what="alice parked on 7100")
        assert record is not None
        since = carol.mark()
        c_call = carol.call(node.orbit_uri("7100"))
        carol.wait_state(c_call, "CONFIRMED", since=since, timeout=10)
        a_call = connected_call(alice, remote_contains="carol@")
        assert talking(alice, a_call, carol, connected_call(carol, remote_contains="alice@"))
        wait_until(
            lambda: root.get(Keys.parked("7100")) is None and root.get(Keys.lru("7100")) is not None,
            timeout=10,
            what="the node (own identity) to free the orbit",
        )
        assert root.get(Keys.member("pool-i", "n1")) is not None
    finally:
        for phone in phones:
            phone.stop()
        for proc in reversed(procs):
            proc.stop()
        root.close()


def test_the_cli_creates_a_node_identity_as_root(secure: LocalEtcdCluster, tmp_path: Path) -> None:
    password_file = tmp_path / "n9.password"
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("pw-" + secrets.token_urlsafe(12) + "\n")
    env = secure.access("root").env()
    done = run_console("identity", "node", "pool-x", "n9", "--password-file", str(password_file), env=env)
    assert done.returncode == 0 and "created etcd user callpark-node.pool-x.n9" in done.stdout, done.stderr
    access = replace(secure.access(), user=node_user("pool-x", "n9"), password_file=str(password_file))
    store = EtcdStore.connect(access)
    try:
        assert writes(store, Keys.member("pool-x", "n9")) and not writes(store, Keys.member("pool-x", "n8"))
    finally:
        store.close()
    again = run_console("identity", "node", "pool-x", "n9", "--password-file", str(password_file), env=env)
    assert again.returncode != 0 and len(again.stderr.strip().splitlines()) == 1, again.stderr
    as_service = run_console(
        "identity", "controller", "c9", "--password-file", str(password_file), env=secure.access().env()
    )
    assert as_service.returncode != 0 and "permission denied" in as_service.stderr, as_service.stderr
    password_file.chmod(0o644)
    loose = run_console("identity", "controller", "c9", "--password-file", str(password_file), env=env)
    assert loose.returncode != 0 and "--password-file" in loose.stderr and "readable by others" in loose.stderr
