"""Pools: a named set of park nodes at a site, paired 1:1 with a backup pool (Lync 2013)."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from callpark.errors import ValidationError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
DEFAULT_FAILBACK_HOLD_DOWN_S = 120


class FailbackPolicy(enum.StrEnum):
    """Whether ranges move back to a recovered pool by themselves or on an operator's word."""

    AUTO = "auto"
    MANUAL = "manual"

    @classmethod
    def parse(cls, text: str) -> FailbackPolicy:
        try:
            return cls(text.strip().lower())
        except ValueError:
            raise ValidationError("pool-failback", f"failback must be auto or manual, not {text!r}") from None


def is_valid_name(name: object) -> bool:
    """Whether ``name`` is a valid pool or site name (letters, digits, ``.``, ``_``, ``-``; 1-63)."""
    return isinstance(name, str) and _NAME_RE.match(name) is not None


def validate_name(kind: str, name: str) -> str:
    """Pool and site names: letters, digits, ``.``, ``_``, ``-``; 1-63 characters."""
    if not is_valid_name(name):
        raise ValidationError(f"{kind}-name", f"{kind} name {name!r} must be 1-63 letters, digits, '.', '_' or '-'")
    return name


@dataclass(frozen=True)
class Pool:
    """A pool of park nodes."""

    name: str
    site: str
    backup: str | None = None
    failback: FailbackPolicy = FailbackPolicy.MANUAL
    failback_hold_down_s: int = DEFAULT_FAILBACK_HOLD_DOWN_S

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "site": self.site,
            "backup": self.backup,
            "failback": self.failback.value,
            "failback_hold_down_s": self.failback_hold_down_s,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Pool:
        backup = data.get("backup")
        hold = data.get("failback_hold_down_s", DEFAULT_FAILBACK_HOLD_DOWN_S)
        if not isinstance(hold, int) or isinstance(hold, bool):
            raise ValidationError("pool-failback", "failback_hold_down_s must be a whole number of seconds")
        return cls(
            name=validate_name("pool", data["name"]),
            site=validate_name("site", data["site"]),
            backup=None if backup is None else validate_name("pool", backup),
            failback=FailbackPolicy.parse(str(data.get("failback", "manual"))),
            failback_hold_down_s=hold,
        )


def validate_pools(pools: Mapping[str, Pool]) -> None:
    """Names, hold-down bounds and 1:1 reciprocal pairing across all pools."""
    for name, pool in pools.items():
        validate_name("pool", name)
        validate_name("site", pool.site)
        if pool.name != name:
            raise ValidationError("pool-name", f"pool stored as {name!r} calls itself {pool.name!r}")
        if not 0 <= pool.failback_hold_down_s <= 86_400:
            raise ValidationError("pool-failback", f"pool {name!r}: failback hold-down must be 0 to 86400 s")
        if pool.backup is None:
            continue
        if pool.backup == name:
            raise ValidationError("pool-pairing", f"pool {name!r} cannot be its own backup")
        partner = pools.get(pool.backup)
        if partner is None:
            raise ValidationError("pool-missing", f"pool {name!r}: backup pool {pool.backup!r} does not exist")
        if partner.backup != name:
            raise ValidationError(
                "pool-pairing",
                f"pool {name!r} names {pool.backup!r} as backup but {pool.backup!r} is paired with "
                f"{partner.backup!r}; pairing is 1:1 and reciprocal",
            )
