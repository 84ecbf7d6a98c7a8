"""Orbit number and range rules (pure), with property tests against brute force."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callpark.errors import ValidationError
from callpark.model.orbits import (
    OrbitRange,
    find_overlap,
    parse_orbit,
    validate_range_shape,
    validate_table,
)
from tests.rules import refused_by


@pytest.mark.parametrize("text", ["7000", "1", "999999999", "*101", "#6000", "*92000", "*95551212", "915551212"])
def test_valid_orbits(text: str) -> None:
    assert str(parse_orbit(text)) == text


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("", "orbit-format"),
        ("*", "orbit-format"),
        ("12a4", "orbit-format"),
        ("+7000", "orbit-format"),
        ("**101", "orbit-format"),
        ("\uff17\uff10\uff10\uff10", "orbit-format"),  # full-width digits are not ASCII digits
        ("0700", "orbit-leading-zero"),
        ("*0700", "orbit-leading-zero"),
        ("#0123", "orbit-leading-zero"),
        ("1234567890", "orbit-length"),  # 10 digits without prefix
        ("*123456789", "orbit-length"),  # 9 digits after a prefix
        ("*100", "orbit-prefix-min"),
        ("#99", "orbit-prefix-min"),
        ("*5", "orbit-prefix-min"),
    ],
)
def test_invalid_orbits_name_the_rule(text: str, rule: str) -> None:
    with refused_by(rule):
        parse_orbit(text)


@pytest.mark.parametrize(
    ("start", "end", "rule"),
    [
        ("100", "1001", "range-length-mismatch"),
        ("*1000", "#1999", "range-prefix-mismatch"),
        ("*1000", "11999", "range-prefix-mismatch"),
        ("7100", "7000", "range-order"),
        ("10000", "20000", "range-size"),
        ("1000", "9999", None),
        ("*7100", "*7199", None),
    ],
)
def test_range_shape(start: str, end: str, rule: str | None) -> None:
    rng = OrbitRange("r", start, end, "p")
    if rule is None:
        validate_range_shape(rng)
        return
    with refused_by(rule):
        validate_range_shape(rng)


def test_range_of_exactly_10000_orbits_is_refused_and_9999_accepted() -> None:
    validate_range_shape(OrbitRange("ok", "10000", "19998", "p"))
    with pytest.raises(ValidationError, match="fewer than 10,000"):
        validate_range_shape(OrbitRange("big", "10000", "19999", "p"))


def test_pool_capacity_is_50000_orbits() -> None:
    ranges = [OrbitRange(f"r{i}", f"{10 + i}0000", f"{10 + i}9998", "p") for i in range(5)]
    assert sum(r.size for r in ranges) == 49_995
    validate_table(ranges, ["p"])
    with refused_by("pool-capacity"):
        validate_table([*ranges, OrbitRange("r9", "90000", "90005", "p")], ["p"])


def test_table_needs_existing_pool() -> None:
    with refused_by("pool-missing"):
        validate_table([OrbitRange("r", "7000", "7010", "nope")], ["p"])


# -- property tests ---------------------------------------------------------------------

prefixes = st.sampled_from(["", "*", "#"])


@st.composite
def orbit_text(draw: st.DrawFn) -> str:
    prefix = draw(prefixes)
    width = draw(st.integers(3 if prefix else 1, 8 if prefix else 9))
    low = max(10 ** (width - 1), 101 if prefix else 1)
    value = draw(st.integers(low, 10**width - 1))
    return f"{prefix}{value}"


@given(orbit_text())
def test_generated_valid_orbits_parse(text: str) -> None:
    assert str(parse_orbit(text)) == text


@given(st.text(max_size=12))
def test_parse_orbit_accepts_exactly_the_lync_grammar(text: str) -> None:
    import re

    lync = re.fullmatch(r"([*#][1-9]\d{0,7})|([1-9]\d{0,8})", text) is not None
    prefixed_small = lync and text[0] in "*#" and int(text[1:]) <= 100
    try:
        parse_orbit(text)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == (lync and not prefixed_small)


@st.composite
def small_ranges(draw: st.DrawFn) -> OrbitRange:
    prefix = draw(st.sampled_from(["", "*"]))
    width = draw(st.sampled_from([3, 4]))
    low = max(10 ** (width - 1), 101 if prefix else 1)
    a = draw(st.integers(low, 10**width - 1))
    b = draw(st.integers(a, min(10**width - 1, a + 300)))
    name = draw(st.text(alphabet="abcdefgh", min_size=1, max_size=4))
    return OrbitRange(name, f"{prefix}{a}", f"{prefix}{b}", "p")


@given(small_ranges(), small_ranges())
def test_overlap_matches_brute_force(a: OrbitRange, b: OrbitRange) -> None:
    assert a.overlaps(b) == bool(set(a.orbits()) & set(b.orbits()))
    assert a.overlaps(b) == b.overlaps(a)


@given(st.lists(small_ranges(), max_size=6, unique_by=lambda r: r.name))
def test_table_validation_finds_every_overlap(ranges: list[OrbitRange]) -> None:
    brute = any(set(x.orbits()) & set(y.orbits()) for i, x in enumerate(ranges) for y in ranges[i + 1 :])
    try:
        validate_table(ranges, ["p"])
        found = False
    except ValidationError as exc:
        assert exc.rule == "range-overlap"
        found = True
    assert found == brute
    if ranges:
        assert (find_overlap(ranges[0], ranges[1:]) is not None) == any(
            set(ranges[0].orbits()) & set(y.orbits()) for y in ranges[1:]
        )


@given(small_ranges(), orbit_text())
def test_contains_matches_membership(rng: OrbitRange, orbit: str) -> None:
    assert rng.contains(orbit) == (orbit in set(rng.orbits()))
