"""Fuzz the admin grammar: orbits and ranges, Call Park settings, pools. Value or ValidationError."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from callpark.errors import ValidationError
from callpark.model import settings as cps
from callpark.model.orbits import OrbitRange, RangeType, parse_orbit, validate_range_shape, validate_table
from callpark.model.pools import FailbackPolicy, Pool, validate_name, validate_pools
from tests.fuzz.budget import FUZZ, json_values, value_or_refusal

orbitish = st.text(alphabet="0123456789*#+- x\u0663", max_size=12) | st.text(max_size=12)


@FUZZ
@given(orbitish)
def test_parse_orbit(text: str) -> None:
    orbit = value_or_refusal(parse_orbit, text, "orbit-")
    assert orbit is None or str(orbit) == text


@FUZZ
@given(st.text(max_size=8), orbitish, orbitish, st.text(max_size=8), orbitish)
def test_range_shape_and_membership(name: str, start: str, end: str, pool: str, probe: str) -> None:
    rng = OrbitRange(name, start, end, pool)
    try:
        validate_range_shape(rng)
    except ValidationError:
        return
    assert rng.contains(start) and rng.contains(end) and 1 <= rng.size < 10_000
    assert rng.contains(probe) in (True, False)
    try:
        validate_table([rng], [pool])
    except ValidationError as exc:
        assert exc.rule in ("pool-missing", "pool-capacity")


@FUZZ
@given(st.text(max_size=12))
def test_range_type(text: str) -> None:
    with contextlib.suppress(ValidationError):
        assert isinstance(RangeType.parse(text), RangeType)


@FUZZ
@given(
    st.text(max_size=20),
    st.text(alphabet="0123456789:", max_size=10),
    st.text(max_size=8),
    st.one_of(st.text(max_size=8), st.integers(), st.floats(), st.booleans()),
    st.one_of(st.none(), st.text(max_size=40), st.text(alphabet="sip:@.;=[]1a-", max_size=30)),
)
def test_settings_fields(scope: str, span: str, flag: str, attempts: Any, uri: str | None) -> None:
    checks: tuple[tuple[Callable[[Any], object], Any], ...] = (
        (cps.parse_scope, scope),
        (cps.parse_timespan, span),
        (lambda v: cps.parse_bool(v, "EnableMusicOnHold"), flag),
        (cps.parse_attempts, attempts),
        (cps.parse_timeout_uri, uri),
    )
    for fn, arg in checks:
        try:
            fn(arg)
        except ValidationError as exc:
            assert exc.rule.startswith("cps-")


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            ["CallPickupTimeoutThreshold", "EnableMusicOnHold", "MaxCallPickupAttempts", "OnTimeoutURI", "Other"]
        ),
        json_values,
    )
)
def test_settings_from_json(data: dict[str, Any]) -> None:
    try:
        settings = cps.CpsSettings.from_json(data)
    except ValidationError:
        return
    assert settings.validate() == settings
    assert cps.CpsSettings.from_json(settings.to_json()) == settings


@FUZZ
@given(
    st.dictionaries(st.sampled_from(["name", "site", "backup", "failback", "failback_hold_down_s"]), json_values)
    | st.fixed_dictionaries({"name": st.text(max_size=10), "site": st.text(max_size=10)})
)
def test_pool_from_json(data: dict[str, Any]) -> None:
    try:
        pool = Pool.from_json(data)
    except (ValidationError, KeyError):  # KeyError: a missing field; parse_state makes it StoreDataError
        return
    assert Pool.from_json(pool.to_json()) == pool


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["a", "b", "c"]),
        st.tuples(
            st.sampled_from(["a", "b", "c", "z"]), st.sampled_from([None, "a", "b", "c", "z"]), st.integers(-5, 100_000)
        ),
        max_size=3,
    ),
    st.text(max_size=10),
    st.text(max_size=10),
)
def test_pool_pairing_and_names(spec: dict[str, tuple[str, str | None, int]], name: str, policy: str) -> None:
    pools = {n: Pool(n, site, backup, FailbackPolicy.MANUAL, hold) for n, (site, backup, hold) in spec.items()}
    for check in (
        lambda: validate_pools(pools),
        lambda: validate_name("pool", name),
        lambda: FailbackPolicy.parse(policy),
    ):
        with contextlib.suppress(ValidationError):
            check()
