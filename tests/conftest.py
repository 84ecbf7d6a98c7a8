"""Shared fixtures: a real etcd for the session, a clean keyspace per test, the CLI."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from callpark.cli import app as cli
from callpark.lab.etcd import LocalEtcdCluster
from callpark.store.admin import AdminStore
from callpark.store.etcd import EtcdStore
from callpark.store.kv import Delete
from callpark.store.schema import Keys

REPO = Path(__file__).resolve().parent.parent
CALLPARK_BIN = Path(sys.executable).parent / "callpark"


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcdCluster]:
    """One real single-member etcd for the session; every test wipes its keys."""
    cluster = LocalEtcdCluster(tmp_path_factory.mktemp("etcd"), members=1)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def etcd(etcd_cluster: LocalEtcdCluster) -> Iterator[EtcdStore]:
    """A store on the session etcd with an empty callpark keyspace, wiped again after."""
    store = EtcdStore.connect(etcd_cluster.endpoints)
    store.txn([], [Delete(Keys.ROOT, prefix=True)])
    try:
        yield store
    finally:
        store.txn([], [Delete(Keys.ROOT, prefix=True)])
        store.close()


@pytest.fixture
def admin_store(etcd: EtcdStore) -> AdminStore:
    return AdminStore(etcd)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


class Cli:
    """Runs ``callpark`` in-process (fast) against the test's etcd."""

    def __init__(self, endpoints: str) -> None:
        self.endpoints = endpoints

    def __call__(self, *argv: str) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(["--etcd", self.endpoints, *argv])
            except SystemExit as exc:  # argparse usage errors
                code = int(exc.code or 0)
        return CliResult(code, out.getvalue(), err.getvalue())

    def ok(self, *argv: str) -> str:
        result = self(*argv)
        assert result.code == 0, f"callpark {' '.join(argv)} failed ({result.code}): {result.err}"
        return result.out


@pytest.fixture
def run_cli(etcd: EtcdStore, etcd_cluster: LocalEtcdCluster) -> Cli:
    return Cli(etcd_cluster.endpoints)


def snapshot_keys(store: EtcdStore) -> dict[str, bytes]:
    """Every callpark key and value, to prove a rejected command changed nothing."""
    return {k: e.value for k, e in store.get_prefix(Keys.ROOT).entries.items()}


def run_console(*argv: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed ``callpark`` console script as a real process."""
    return subprocess.run(
        [str(CALLPARK_BIN), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
