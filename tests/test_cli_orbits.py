"""``callpark orbit`` against real etcd: every Lync rule, one-line errors, nothing written."""

from __future__ import annotations

import json

import pytest

from callpark.store.etcd import EtcdStore
from tests.conftest import Cli, snapshot_keys


@pytest.fixture
def pools(run_cli: Cli) -> Cli:
    run_cli.ok("pool", "new", "pool-a", "--site", "site-a")
    run_cli.ok("pool", "new", "pool-b", "--site", "site-b", "--backup", "pool-a")
    return run_cli


def assert_refused(cli: Cli, etcd: EtcdStore, rule: str, *argv: str) -> str:
    before = snapshot_keys(etcd)
    result = cli(*argv)
    assert result.code == 1, result
    assert result.err.count("\n") == 1, f"error must be one line: {result.err!r}"
    assert f"[{rule}]" in result.err, result.err
    assert snapshot_keys(etcd) == before, "a refused command must not change etcd"
    return result.err


def test_new_get_set_remove_round_trip(pools: Cli) -> None:
    out = pools.ok("orbit", "new", "park-a", "--start", "7000", "--end", "7099", "--pool", "pool-a")
    assert "100 orbits" in out
    pools.ok(
        "orbit", "new", "pickup", "--start", "*7100", "--end", "*7199", "--pool", "pool-b", "--type", "GroupPickup"
    )
    rows = json.loads(pools.ok("orbit", "get", "--json"))
    assert [(r["name"], r["start"], r["end"], r["pool"], r["type"], r["size"]) for r in rows] == [
        ("park-a", "7000", "7099", "pool-a", "CallPark", 100),
        ("pickup", "*7100", "*7199", "pool-b", "GroupPickup", 100),
    ]
    table = pools.ok("orbit", "get")
    assert "park-a" in table and "*7199" in table and "GroupPickup" in table
    pools.ok("orbit", "set", "park-a", "--end", "7199", "--pool", "pool-b")
    rows = json.loads(pools.ok("orbit", "get", "park-a", "--json"))
    assert rows == [
        {"name": "park-a", "start": "7000", "end": "7199", "pool": "pool-b", "type": "CallPark", "size": 200}
    ]
    assert [r["name"] for r in json.loads(pools.ok("orbit", "get", "--filter", "pick*", "--json"))] == ["pickup"]
    assert [r["name"] for r in json.loads(pools.ok("orbit", "get", "--type", "CallPark", "--json"))] == ["park-a"]
    pools.ok("orbit", "remove", "park-a")
    assert [r["name"] for r in json.loads(pools.ok("orbit", "get", "--json"))] == ["pickup"]


@pytest.mark.parametrize(
    ("start", "end", "rule"),
    [
        ("0700", "0799", "orbit-leading-zero"),
        ("*0700", "*0799", "orbit-leading-zero"),
        ("7x00", "7099", "orbit-format"),
        ("1234567890", "1234567899", "orbit-length"),
        ("*123456789", "*123456799", "orbit-length"),
        ("*100", "*100", "orbit-prefix-min"),
        ("#50", "#99", "orbit-prefix-min"),
        ("100", "1001", "range-length-mismatch"),
        ("*1000", "#1999", "range-prefix-mismatch"),
        ("7099", "7000", "range-order"),
        ("10000", "19999", "range-size"),
    ],
)
def test_new_refuses_each_lync_rule(pools: Cli, etcd: EtcdStore, start: str, end: str, rule: str) -> None:
    assert_refused(pools, etcd, rule, "orbit", "new", "r", "--start", start, "--end", end, "--pool", "pool-a")


def test_overlap_with_either_type_anywhere_is_refused(pools: Cli, etcd: EtcdStore) -> None:
    pools.ok("orbit", "new", "pickup", "--start", "7050", "--end", "7150", "--pool", "pool-b", "--type", "GroupPickup")
    err = assert_refused(
        pools, etcd, "range-overlap", "orbit", "new", "park", "--start", "7000", "--end", "7050", "--pool", "pool-a"
    )
    assert "pickup" in err and "GroupPickup" in err
    # same digits with a prefix are different dial strings: no overlap
    pools.ok("orbit", "new", "star", "--start", "*7000", "--end", "*7099", "--pool", "pool-a")
    # and set may not create an overlap either
    pools.ok("orbit", "new", "low", "--start", "6000", "--end", "6099", "--pool", "pool-a")
    assert_refused(pools, etcd, "range-overlap", "orbit", "set", "low", "--end", "7060")


def test_pool_must_exist_and_names_are_unique(pools: Cli, etcd: EtcdStore) -> None:
    assert_refused(
        pools, etcd, "pool-missing", "orbit", "new", "r", "--start", "7000", "--end", "7001", "--pool", "nope"
    )
    pools.ok("orbit", "new", "r", "--start", "7000", "--end", "7001", "--pool", "pool-a")
    assert_refused(
        pools, etcd, "range-exists", "orbit", "new", "r", "--start", "8000", "--end", "8001", "--pool", "pool-a"
    )
    assert_refused(pools, etcd, "pool-missing", "orbit", "set", "r", "--pool", "nope")


def test_at_most_50000_orbits_per_pool(pools: Cli, etcd: EtcdStore) -> None:
    for i in range(5):
        pools.ok("orbit", "new", f"r{i}", "--start", f"{10 + i}0000", "--end", f"{10 + i}9998", "--pool", "pool-a")
    err = assert_refused(
        pools, etcd, "pool-capacity", "orbit", "new", "r9", "--start", "90000", "--end", "90005", "--pool", "pool-a"
    )
    assert "50,000" in err
    pools.ok("orbit", "new", "r9", "--start", "90000", "--end", "90005", "--pool", "pool-b")


def test_name_cannot_be_changed_and_unknown_range_is_not_found(pools: Cli) -> None:
    result = pools("orbit", "set", "ghost", "--end", "7001")
    assert result.code == 1 and "[not-found]" in result.err
    result = pools("orbit", "set", "x", "--name", "y")
    assert result.code == 2  # there is no --name option: identities are not renamable


def test_bad_type_and_usage_errors(pools: Cli, etcd: EtcdStore) -> None:
    assert_refused(
        pools,
        etcd,
        "range-type",
        "orbit",
        "new",
        "r",
        "--start",
        "7000",
        "--end",
        "7001",
        "--pool",
        "pool-a",
        "--type",
        "Pickup",
    )
    result = pools("orbit", "new", "r", "--start", "7000")
    assert result.code == 2 and "required" in result.err


def test_re_homing_a_range_says_what_will_happen_first_and_dry_run_changes_nothing(pools: Cli, etcd: EtcdStore) -> None:
    pools.ok("orbit", "new", "park-a", "--start", "7000", "--end", "7099", "--pool", "pool-a")
    before = snapshot_keys(etcd)
    out = pools.ok("orbit", "set", "park-a", "--pool", "pool-b", "--dry-run")
    assert "range 'park-a' is served by pool-a (home pool-a); re-homing it to pool-b:" in out, out
    assert "neither pool-b nor its backup has a ready node" in out and "no call is parked on it" in out
    assert out.rstrip().endswith("dry run: nothing changed")
    assert snapshot_keys(etcd) == before
    assert_refused(pools, etcd, "pool-missing", "orbit", "set", "park-a", "--pool", "nope", "--dry-run")
    out = pools.ok("orbit", "set", "park-a", "--pool", "pool-b")
    assert "re-homing it to pool-b" in out and "updated range 'park-a'" in out
    assert json.loads(pools.ok("orbit", "get", "park-a", "--json"))[0]["pool"] == "pool-b"
    assert "already has home pool pool-b" in pools.ok("orbit", "set", "park-a", "--pool", "pool-b", "--dry-run")
