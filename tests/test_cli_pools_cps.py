"""``callpark pool`` and ``callpark cps`` against real etcd."""

from __future__ import annotations

import json

import pytest

from callpark.store.etcd import EtcdStore
from tests.conftest import Cli
from tests.test_cli_orbits import assert_refused


def backups(cli: Cli) -> dict[str, str | None]:
    return {p["name"]: p["backup"] for p in json.loads(cli.ok("pool", "get", "--json"))}


def test_pairing_is_reciprocal_and_one_to_one(run_cli: Cli, etcd: EtcdStore) -> None:
    run_cli.ok("pool", "new", "a", "--site", "s1")
    run_cli.ok("pool", "new", "b", "--site", "s2")
    run_cli.ok("pool", "new", "c", "--site", "s3")
    run_cli.ok("pool", "set", "a", "--backup", "b")
    assert backups(run_cli) == {"a": "b", "b": "a", "c": None}
    assert_refused(run_cli, etcd, "pool-pairing", "pool", "set", "c", "--backup", "a")
    assert_refused(run_cli, etcd, "pool-pairing", "pool", "set", "a", "--backup", "c")
    assert_refused(run_cli, etcd, "pool-pairing", "pool", "set", "c", "--backup", "c")
    assert_refused(run_cli, etcd, "pool-missing", "pool", "set", "c", "--backup", "zz")
    assert_refused(run_cli, etcd, "pool-pairing", "pool", "new", "d", "--site", "s4", "--backup", "b")
    run_cli.ok("pool", "set", "b", "--no-backup")
    assert backups(run_cli) == {"a": None, "b": None, "c": None}
    run_cli.ok("pool", "new", "d", "--site", "s4", "--backup", "c")
    assert backups(run_cli) == {"a": None, "b": None, "c": "d", "d": "c"}


def test_pool_owning_ranges_cannot_be_removed(run_cli: Cli, etcd: EtcdStore) -> None:
    run_cli.ok("pool", "new", "a", "--site", "s1")
    run_cli.ok("pool", "new", "b", "--site", "s2", "--backup", "a")
    run_cli.ok("orbit", "new", "r", "--start", "7000", "--end", "7009", "--pool", "a")
    assert_refused(run_cli, etcd, "pool-owns-ranges", "pool", "remove", "a")
    run_cli.ok("orbit", "remove", "r")
    run_cli.ok("pool", "remove", "a")
    assert backups(run_cli) == {"b": None}  # the partner is unpaired in the same transaction


def test_pool_names_and_duplicates(run_cli: Cli, etcd: EtcdStore) -> None:
    assert_refused(run_cli, etcd, "pool-name", "pool", "new", "bad/name", "--site", "s")
    assert_refused(run_cli, etcd, "site-name", "pool", "new", "p", "--site", "two words")
    run_cli.ok("pool", "new", "pool0.litwareinc.com", "--site", "redmond")
    assert_refused(run_cli, etcd, "pool-exists", "pool", "new", "pool0.litwareinc.com", "--site", "x")
    assert_refused(run_cli, etcd, "pool-failback", "pool", "set", "pool0.litwareinc.com", "--failback", "sometimes")


def test_global_settings_always_exist_and_reset_to_defaults(run_cli: Cli, etcd: EtcdStore) -> None:
    got = json.loads(run_cli.ok("cps", "get", "--identity", "global", "--json"))
    assert got["global"] == {
        "CallPickupTimeoutThreshold": "00:01:30",
        "EnableMusicOnHold": True,
        "MaxCallPickupAttempts": 1,
        "OnTimeoutURI": None,
    }
    run_cli.ok(
        "cps",
        "set",
        "--timeout",
        "00:02:00",
        "--attempts",
        "3",
        "--on-timeout-uri",
        "sip:op@example.com",
        "--sip-domains",
        "example.com",
    )
    got = json.loads(run_cli.ok("cps", "get", "--json"))["global"]
    assert got["CallPickupTimeoutThreshold"] == "00:02:00" and got["MaxCallPickupAttempts"] == 3
    assert_refused(run_cli, etcd, "cps-global-exists", "cps", "new", "--identity", "global")
    run_cli.ok("cps", "remove", "--identity", "global")
    got = json.loads(run_cli.ok("cps", "get", "--json"))["global"]
    assert got["CallPickupTimeoutThreshold"] == "00:01:30" and got["OnTimeoutURI"] is None


def test_site_overrides_global_for_the_pools_of_that_site(run_cli: Cli, etcd: EtcdStore) -> None:
    run_cli.ok("pool", "new", "a", "--site", "redmond")
    run_cli.ok("pool", "new", "b", "--site", "dublin")
    run_cli.ok("cps", "set", "--timeout", "00:03:00")
    run_cli.ok("cps", "new", "--identity", "site:redmond", "--timeout", "00:00:45", "--music", "false")
    a = json.loads(run_cli.ok("cps", "effective", "--pool", "a", "--json"))
    b = json.loads(run_cli.ok("cps", "effective", "--pool", "b", "--json"))
    assert (a["scope"], a["CallPickupTimeoutThreshold"], a["EnableMusicOnHold"]) == ("site:redmond", "00:00:45", False)
    assert (b["scope"], b["CallPickupTimeoutThreshold"]) == ("global", "00:03:00")
    assert_refused(run_cli, etcd, "cps-exists", "cps", "new", "--identity", "site:redmond")
    run_cli.ok("cps", "remove", "--identity", "site:redmond")
    a = json.loads(run_cli.ok("cps", "effective", "--pool", "a", "--json"))
    assert (a["scope"], a["CallPickupTimeoutThreshold"]) == ("global", "00:03:00")
    result = run_cli("cps", "remove", "--identity", "site:redmond")
    assert result.code == 1 and "[not-found]" in result.err
    result = run_cli("cps", "effective", "--pool", "nope")
    assert result.code == 1 and "[not-found]" in result.err


@pytest.mark.parametrize(
    ("args", "rule"),
    [
        (["--timeout", "00:00:05"], "cps-timeout-range"),
        (["--timeout", "00:11:00"], "cps-timeout-range"),
        (["--timeout", "90s"], "cps-timeout-format"),
        (["--attempts", "0"], "cps-attempts"),
        (["--attempts", "11"], "cps-attempts"),
        (["--music", "maybe"], "cps-bool"),
        (["--on-timeout-uri", "tel:+15551212"], "cps-uri"),
        (["--identity", "pool:a", "--attempts", "2"], "cps-scope"),
        ([], "cps-field"),
    ],
)
def test_settings_refusals(run_cli: Cli, etcd: EtcdStore, args: list[str], rule: str) -> None:
    assert_refused(run_cli, etcd, rule, "cps", "set", *args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--on-timeout-uri", "sip:op@evil.example", "--sip-domains", "127.0.0.1,example.com"],
            "outside the deployment's SIP domains 127.0.0.1, example.com",
        ),
        (["--on-timeout-uri", "sip:op@127.0.0.1"], "needs the deployment's SIP domains"),
        (["--on-timeout-uri", "sip:op@127.0.0.9", "--sip-domains", "127.0.0.1"], "outside"),
    ],
)
def test_on_timeout_uri_outside_the_sip_domains_is_refused_by_cps_set(
    run_cli: Cli, etcd: EtcdStore, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    """The nodes never dial an OnTimeoutURI outside the SIP domains (they hang up instead), so
    ``cps set`` refuses one with a one-line error and writes nothing."""
    monkeypatch.delenv("CALLPARK_SIP_DOMAINS", raising=False)
    err = assert_refused(run_cli, etcd, "cps-uri-domain", "cps", "set", *args)
    assert message in err, err
    assert_refused(run_cli, etcd, "cps-uri-domain", "cps", "new", "--identity", "site:x", *args)


def test_on_timeout_uri_inside_the_sip_domains_is_accepted(
    run_cli: Cli, etcd: EtcdStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_cli.ok("cps", "set", "--on-timeout-uri", "sip:operator@example.com", "--sip-domains", "127.0.0.1,example.com")
    monkeypatch.setenv("CALLPARK_SIP_DOMAINS", "127.0.0.1")
    run_cli.ok("cps", "set", "--identity", "site:s", "--on-timeout-uri", "sip:operator@127.0.0.1")
    run_cli.ok("cps", "set", "--on-timeout-uri", "none")  # unsetting needs no domains
    got = json.loads(run_cli.ok("cps", "get", "--json"))
    assert got["global"]["OnTimeoutURI"] is None and got["site:s"]["OnTimeoutURI"] == "sip:operator@127.0.0.1"


def test_cps_set_creates_a_site_scope_as_the_readme_shows(run_cli: Cli, etcd: EtcdStore) -> None:
    """``cps set --identity site:X`` without ``cps new`` first creates the scope from the defaults."""
    run_cli.ok("pool", "new", "a", "--site", "site-a")
    run_cli.ok("cps", "set", "--identity", "site:site-a", "--timeout", "00:00:45", "--attempts", "2")
    a = json.loads(run_cli.ok("cps", "effective", "--pool", "a", "--json"))
    assert (a["scope"], a["CallPickupTimeoutThreshold"], a["MaxCallPickupAttempts"]) == ("site:site-a", "00:00:45", 2)
    assert a["EnableMusicOnHold"] is True  # the rest from the defaults, as cps new would
    run_cli.ok("cps", "set", "--identity", "site:site-a", "--attempts", "3")
    a = json.loads(run_cli.ok("cps", "effective", "--pool", "a", "--json"))
    assert (a["CallPickupTimeoutThreshold"], a["MaxCallPickupAttempts"]) == ("00:00:45", 3)
