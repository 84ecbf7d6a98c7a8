"""Concurrent admin writes: guarded transactions, never check-then-write."""

from __future__ import annotations

import subprocess
import threading

from callpark.errors import ValidationError
from callpark.lab.etcd import LocalEtcdCluster
from callpark.model import admin
from callpark.model.orbits import OrbitRange
from callpark.store.admin import AdminStore
from callpark.store.etcd import EtcdStore
from tests.conftest import CALLPARK_BIN, Cli


def test_two_admins_racing_on_one_snapshot_yield_exactly_one_range(
    run_cli: Cli, etcd_cluster: LocalEtcdCluster
) -> None:
    """Both read the same state, both validate, both commit: the guard lets one through."""
    run_cli.ok("pool", "new", "p", "--site", "s")
    barrier = threading.Barrier(2, timeout=10)
    outcomes: dict[str, str] = {}

    def contender(name: str, start: str, end: str) -> None:
        store = EtcdStore.connect(etcd_cluster.endpoints)
        first_attempt = [True]

        def transition(state: admin.AdminState) -> admin.AdminState:
            new = admin.new_range(state, OrbitRange(name, start, end, "p"))
            if first_attempt[0]:
                first_attempt[0] = False
                barrier.wait()  # both have validated against the same snapshot
            return new

        try:
            AdminStore(store).change(transition)
            outcomes[name] = "ok"
        except ValidationError as exc:
            outcomes[name] = exc.rule
        finally:
            store.close()

    threads = [
        threading.Thread(target=contender, args=("first", "7000", "7050")),
        threading.Thread(target=contender, args=("second", "7025", "7075")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes.values()) == ["ok", "range-overlap"], outcomes
    stored = AdminStore(EtcdStore.connect(etcd_cluster.endpoints)).state().ranges
    assert len(stored) == 1


def test_two_processes_creating_overlapping_ranges_exactly_one_succeeds(
    run_cli: Cli, etcd_cluster: LocalEtcdCluster
) -> None:
    run_cli.ok("pool", "new", "p", "--site", "s")
    for round_ in range(5):
        base = 1000 + round_ * 1000
        argv = [str(CALLPARK_BIN), "--etcd", etcd_cluster.endpoints, "orbit", "new"]
        procs = [
            subprocess.Popen(
                [
                    *argv,
                    f"r{round_}-{i}",
                    "--start",
                    str(base + i * 10),
                    "--end",
                    str(base + 50 + i * 10),
                    "--pool",
                    "p",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        results = []
        for proc in procs:
            try:
                _out, err = proc.communicate(timeout=60)
            finally:
                proc.kill()
                proc.wait()
            results.append((proc.returncode, err))
        codes = sorted(code for code, _ in results)
        assert codes == [0, 1], results
        assert any("[range-overlap]" in err for _, err in results)
