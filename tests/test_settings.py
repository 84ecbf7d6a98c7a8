"""Call Park settings: formats, bounds, defaults and scope precedence (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callpark.model.settings import (
    DEFAULTS,
    CpsSettings,
    effective_settings,
    format_timespan,
    parse_scope,
    parse_timeout_uri,
    parse_timespan,
)
from tests.rules import refused_by


def test_lync_defaults() -> None:
    assert DEFAULTS.to_json() == {
        "CallPickupTimeoutThreshold": "00:01:30",
        "EnableMusicOnHold": True,
        "MaxCallPickupAttempts": 1,
        "OnTimeoutURI": None,
    }


@pytest.mark.parametrize(("text", "seconds"), [("00:00:10", 10), ("00:01:30", 90), ("00:10:00", 600), ("0:05:00", 300)])
def test_timespan_bounds_accept(text: str, seconds: int) -> None:
    assert parse_timespan(text) == seconds


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("00:00:09", "cps-timeout-range"),
        ("00:10:01", "cps-timeout-range"),
        ("01:00:00", "cps-timeout-range"),
        ("90", "cps-timeout-format"),
        ("00:1:30", "cps-timeout-format"),
        ("00:00:75", "cps-timeout-format"),
        ("00:61:00", "cps-timeout-format"),
        ("", "cps-timeout-format"),
    ],
)
def test_timespan_refusals(text: str, rule: str) -> None:
    with refused_by(rule):
        parse_timespan(text)


@given(st.integers(10, 600))
def test_timespan_round_trip(seconds: int) -> None:
    assert parse_timespan(format_timespan(seconds)) == seconds


@pytest.mark.parametrize("value", [0, 11, -1, "x", "1.5", True])
def test_attempts_out_of_range(value: object) -> None:
    with refused_by("cps-attempts"):
        DEFAULTS.with_changes({"MaxCallPickupAttempts": value})


@pytest.mark.parametrize("value", [1, 10, "7"])
def test_attempts_in_range(value: object) -> None:
    assert 1 <= DEFAULTS.with_changes({"MaxCallPickupAttempts": value}).max_call_pickup_attempts <= 10


@pytest.mark.parametrize(
    "uri", ["sip:operator@example.com", "sips:rgs@pool0.litwareinc.com:5061", "sip:7000@10.0.0.1;user=phone"]
)
def test_timeout_uri_accepts_sip_and_sips(uri: str) -> None:
    assert parse_timeout_uri(uri) == uri


@pytest.mark.parametrize(
    "uri", ["tel:+15551212", "operator@example.com", "http://x", "sip:", "sip:a b@c", "sip:a@h:70000"]
)
def test_timeout_uri_refusals(uri: str) -> None:
    with refused_by("cps-uri"):
        parse_timeout_uri(uri)


@pytest.mark.parametrize("text", ["", "none", "None", "$null"])
def test_timeout_uri_unset(text: str) -> None:
    assert parse_timeout_uri(text) is None


def test_unknown_field_refused() -> None:
    with refused_by("cps-field"):
        DEFAULTS.with_changes({"MaxCallPickupAttempt": 2})


@pytest.mark.parametrize(
    ("text", "scope"), [("global", "global"), ("Global", "global"), ("site:Redmond", "site:Redmond")]
)
def test_scopes(text: str, scope: str) -> None:
    assert parse_scope(text) == scope


@pytest.mark.parametrize("text", ["pool:a", "user:x", "site:", "site:a/b", "service:ApplicationServer"])
def test_no_other_scopes(text: str) -> None:
    with refused_by("cps-scope"):
        parse_scope(text)


def test_site_overrides_global_else_global_else_defaults() -> None:
    g = CpsSettings(call_pickup_timeout_s=120)
    s = CpsSettings(call_pickup_timeout_s=30, max_call_pickup_attempts=3)
    assert effective_settings({"global": g, "site:a": s}, "a") == ("site:a", s)
    assert effective_settings({"global": g, "site:a": s}, "b") == ("global", g)
    assert effective_settings({}, "b") == ("global", DEFAULTS)
