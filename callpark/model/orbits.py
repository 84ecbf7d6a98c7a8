"""Orbit numbers and orbit ranges, validated exactly as Lync Server 2013 does.

Rules (New-CsCallParkOrbit): an orbit is ``*`` or ``#`` then 1-9 then up to 7 digits,
or 1-9 then up to 8 digits; no leading zero after the prefix; the digits after a
prefix must be greater than 100; start and end have the same length and the same
prefix; start <= end; fewer than 10,000 orbits per range; at most 50,000 orbits per
pool; no overlap with any other range of either type.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from callpark.errors import ValidationError

MAX_ORBITS_PER_RANGE = 9_999  # "fewer than 10,000"
MAX_ORBITS_PER_POOL = 50_000
PREFIXES = ("*", "#")

_NAME_RE = re.compile(r"^[^/\x00-\x1f\x7f]{1,128}$")


class RangeType(enum.StrEnum):
    """The two kinds of orbit range (Lync 2013 Feb-2013 CU)."""

    CALL_PARK = "CallPark"
    GROUP_PICKUP = "GroupPickup"

    @classmethod
    def parse(cls, text: str) -> RangeType:
        for member in cls:
            if member.value.lower() == text.strip().lower():
                return member
        raise ValidationError("range-type", f"type must be CallPark or GroupPickup, not {text!r}")


@dataclass(frozen=True, order=True)
class Orbit:
    """A validated orbit number: an optional ``*``/``#`` prefix and its digits."""

    prefix: str
    digits: str

    @property
    def value(self) -> int:
        return int(self.digits)

    def __str__(self) -> str:
        return self.prefix + self.digits


def parse_orbit(text: str) -> Orbit:
    """Parse and validate one orbit number; raise :class:`ValidationError` naming the rule."""
    if not isinstance(text, str) or not text:
        raise ValidationError("orbit-format", "an orbit number must not be empty")
    prefix = text[0] if text[0] in PREFIXES else ""
    digits = text[len(prefix) :]
    if not digits:
        raise ValidationError("orbit-format", f"orbit {text!r} has a prefix but no digits")
    if not digits.isascii() or not digits.isdigit():
        raise ValidationError(
            "orbit-format",
            f"orbit {text!r} may contain only digits after an optional leading * or #",
        )
    if digits[0] == "0":
        where = "after the prefix" if prefix else "as the first digit"
        raise ValidationError("orbit-leading-zero", f"orbit {text!r} has a leading zero {where}")
    limit = 8 if prefix else 9
    if len(digits) > limit:
        shape = f"{prefix} then at most 8 digits" if prefix else "at most 9 digits"
        raise ValidationError("orbit-length", f"orbit {text!r} is too long: {shape}")
    if prefix and int(digits) <= 100:
        raise ValidationError("orbit-prefix-min", f"orbit {text!r}: the number after {prefix} must be greater than 100")
    return Orbit(prefix, digits)


def validate_range_name(name: str) -> str:
    """Range identities are any string of 1-128 printable characters without ``/``."""
    if not _NAME_RE.match(name) or name != name.strip():
        raise ValidationError(
            "range-name",
            f"range name {name!r} must be 1-128 printable characters, no '/', no surrounding spaces",
        )
    return name


@dataclass(frozen=True)
class OrbitRange:
    """One row of the orbit table (a ``CsCallParkOrbit``)."""

    name: str
    start: str
    end: str
    pool: str
    type: RangeType = RangeType.CALL_PARK

    @property
    def first(self) -> Orbit:
        return parse_orbit(self.start)

    @property
    def last(self) -> Orbit:
        return parse_orbit(self.end)

    @property
    def size(self) -> int:
        return self.last.value - self.first.value + 1

    @property
    def prefix(self) -> str:
        return self.first.prefix

    @property
    def width(self) -> int:
        return len(self.first.digits)

    def contains(self, orbit: str | Orbit) -> bool:
        """Whether ``orbit`` is a number of this range."""
        try:
            o = orbit if isinstance(orbit, Orbit) else parse_orbit(orbit)
        except ValidationError:
            return False
        first, last = self.first, self.last
        return o.prefix == first.prefix and len(o.digits) == len(first.digits) and first.value <= o.value <= last.value

    def orbits(self) -> Iterator[str]:
        """Every orbit of the range, in order."""
        first, last = self.first, self.last
        for value in range(first.value, last.value + 1):
            yield f"{first.prefix}{value}"

    def overlaps(self, other: OrbitRange) -> bool:
        """Two ranges overlap when they share at least one dialable orbit string."""
        a1, a2, b1, b2 = self.first, self.last, other.first, other.last
        if a1.prefix != b1.prefix or len(a1.digits) != len(b1.digits):
            return False
        return a1.value <= b2.value and b1.value <= a2.value

    def describe(self) -> str:
        return f"{self.name!r} ({self.start}-{self.end})"

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "start": self.start, "end": self.end, "pool": self.pool, "type": self.type.value}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> OrbitRange:
        return cls(
            str(data["name"]),
            str(data["start"]),
            str(data["end"]),
            str(data["pool"]),
            RangeType.parse(str(data["type"])),
        )


def validate_range_shape(rng: OrbitRange) -> OrbitRange:
    """Check one range on its own (everything but overlap and pool capacity)."""
    validate_range_name(rng.name)
    first, last = parse_orbit(rng.start), parse_orbit(rng.end)
    if first.prefix != last.prefix:
        raise ValidationError(
            "range-prefix-mismatch",
            f"range {rng.name!r}: start {rng.start!r} and end {rng.end!r} must begin with the same prefix",
        )
    if len(first.digits) != len(last.digits):
        raise ValidationError(
            "range-length-mismatch",
            f"range {rng.name!r}: start {rng.start!r} and end {rng.end!r} must have the same length",
        )
    if first.value > last.value:
        raise ValidationError("range-order", f"range {rng.name!r}: start {rng.start!r} is greater than end {rng.end!r}")
    size = last.value - first.value + 1
    if size > MAX_ORBITS_PER_RANGE:
        raise ValidationError(
            "range-size",
            f"range {rng.name!r} has {size} orbits; a range must have fewer than 10,000",
        )
    return rng


def find_overlap(rng: OrbitRange, others: Iterable[OrbitRange]) -> OrbitRange | None:
    """The first range of ``others`` (other than ``rng`` itself, by name) that overlaps it."""
    for other in others:
        if other.name != rng.name and rng.overlaps(other):
            return other
    return None


def validate_table(ranges: Iterable[OrbitRange], pools: Iterable[str]) -> None:
    """Validate a whole orbit table: every range's shape, pools, overlaps, pool capacity."""
    table = list(ranges)
    known_pools = set(pools)
    per_pool: dict[str, int] = {}
    ordered = sorted(table, key=lambda r: (r.prefix, r.width, r.first.value, r.name))
    for rng in table:
        validate_range_shape(rng)
        if rng.pool not in known_pools:
            raise ValidationError("pool-missing", f"range {rng.name!r}: pool {rng.pool!r} does not exist")
        per_pool[rng.pool] = per_pool.get(rng.pool, 0) + rng.size
    # After sorting by (prefix, width, start), any overlap shows up between neighbours.
    for before, after in itertools.pairwise(ordered):
        if before.overlaps(after):
            raise ValidationError("range-overlap", f"range {after.describe()} overlaps range {before.describe()}")
    for pool, total in sorted(per_pool.items()):
        if total > MAX_ORBITS_PER_POOL:
            raise ValidationError(
                "pool-capacity",
                f"pool {pool!r} would have {total} orbits; a pool may have at most 50,000",
            )
