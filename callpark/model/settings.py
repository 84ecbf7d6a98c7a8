"""Call Park settings (``CsCpsConfiguration``): scopes, defaults, bounds, effective values.

Scopes are ``global`` (always exists; removing it resets it to the defaults) and
``site:<name>`` (created with ``new``). A site's settings replace the global ones for
the pools of that site; there is no pool or user scope.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from callpark.errors import ValidationError
from callpark.model.pools import is_valid_name

GLOBAL_SCOPE = "global"
MIN_TIMEOUT_S = 10
MAX_TIMEOUT_S = 600
MIN_ATTEMPTS = 1
MAX_ATTEMPTS = 10

_TIMESPAN_RE = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})$")
_URI_RE = re.compile(
    r"^(?P<scheme>sips?):(?:(?P<user>[^@\s<>\"]+)@)?(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>\d{1,5}))?(?P<params>;[^\s<>\"]*)?$"
)


def parse_scope(text: str) -> str:
    """Normalise a scope identity: ``global`` or ``site:<name>``."""
    t = text.strip()
    if t.lower() == GLOBAL_SCOPE:
        return GLOBAL_SCOPE
    if t[:5].lower() == "site:":
        site = t[5:]
        if not is_valid_name(site):
            raise ValidationError("cps-scope", f"site name {site!r} is not valid (letters, digits, . _ -)")
        return f"site:{site}"
    raise ValidationError("cps-scope", f"scope must be 'global' or 'site:<name>', not {text!r}")


def parse_timespan(text: str) -> int:
    """Parse ``hh:mm:ss`` into seconds and check CallPickupTimeoutThreshold's bounds."""
    m = _TIMESPAN_RE.match(text.strip())
    if not m:
        raise ValidationError("cps-timeout-format", f"CallPickupTimeoutThreshold must be hh:mm:ss, not {text!r}")
    hours, minutes, seconds = (int(g) for g in m.groups())
    if minutes > 59 or seconds > 59:
        raise ValidationError(
            "cps-timeout-format", f"CallPickupTimeoutThreshold {text!r}: minutes and seconds go up to 59"
        )
    total = hours * 3600 + minutes * 60 + seconds
    if not MIN_TIMEOUT_S <= total <= MAX_TIMEOUT_S:
        raise ValidationError(
            "cps-timeout-range",
            f"CallPickupTimeoutThreshold {text!r} is out of range: 00:00:10 to 00:10:00",
        )
    return total


def format_timespan(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def parse_bool(text: str, field: str) -> bool:
    t = text.strip().lower().lstrip("$")
    if t in ("true", "yes", "on", "1"):
        return True
    if t in ("false", "no", "off", "0"):
        return False
    raise ValidationError("cps-bool", f"{field} must be true or false, not {text!r}")


def parse_attempts(text: str | int | float) -> int:
    try:
        if isinstance(text, float) and not text.is_integer():
            raise ValueError("not a whole number")  # 2.5, inf, nan: never truncated
        value = int(text)
    except (TypeError, ValueError, OverflowError):
        raise ValidationError("cps-attempts", f"MaxCallPickupAttempts must be a whole number, not {text!r}") from None
    if isinstance(text, bool) or not MIN_ATTEMPTS <= value <= MAX_ATTEMPTS:
        raise ValidationError("cps-attempts", f"MaxCallPickupAttempts must be 1 to 10, not {text!r}")
    return value


def parse_timeout_uri(text: str | None) -> str | None:
    """A ``sip:``/``sips:`` URI, or None (also for ``""`` and ``none``) to unset it."""
    if text is None or text.strip() == "" or text.strip().lower() in ("none", "$null", "null"):
        return None
    t = text.strip()
    m = _URI_RE.match(t)
    if not m:
        raise ValidationError(
            "cps-uri",
            f"OnTimeoutURI must be a sip: or sips: URI such as sip:operator@example.com, not {text!r}",
        )
    if m.group("port") is not None and not 1 <= int(m.group("port")) <= 65535:
        raise ValidationError("cps-uri", f"OnTimeoutURI {text!r} has a port out of range")
    return t


@dataclass(frozen=True)
class CpsSettings:
    """The four Call Park settings of one scope."""

    call_pickup_timeout_s: int = 90
    enable_music_on_hold: bool = True
    max_call_pickup_attempts: int = 1
    on_timeout_uri: str | None = None

    def validate(self) -> CpsSettings:
        parse_timespan(format_timespan(self.call_pickup_timeout_s))
        parse_attempts(self.max_call_pickup_attempts)
        parse_timeout_uri(self.on_timeout_uri)
        if not isinstance(self.enable_music_on_hold, bool):
            raise ValidationError("cps-bool", "EnableMusicOnHold must be true or false")
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "CallPickupTimeoutThreshold": format_timespan(self.call_pickup_timeout_s),
            "EnableMusicOnHold": self.enable_music_on_hold,
            "MaxCallPickupAttempts": self.max_call_pickup_attempts,
            "OnTimeoutURI": self.on_timeout_uri,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CpsSettings:
        """Build from the Lync-named fields; missing fields take the defaults."""
        return DEFAULTS.with_changes(data)

    def with_changes(self, changes: Mapping[str, Any]) -> CpsSettings:
        """Apply Lync-named field changes (strings or typed values), validating each."""
        known = {
            "CallPickupTimeoutThreshold",
            "EnableMusicOnHold",
            "MaxCallPickupAttempts",
            "OnTimeoutURI",
        }
        unknown = set(changes) - known
        if unknown:
            raise ValidationError("cps-field", f"unknown Call Park setting(s): {', '.join(sorted(unknown))}")
        result = self
        if "CallPickupTimeoutThreshold" in changes:
            result = replace(result, call_pickup_timeout_s=parse_timespan(str(changes["CallPickupTimeoutThreshold"])))
        if "EnableMusicOnHold" in changes:
            v = changes["EnableMusicOnHold"]
            flag = v if isinstance(v, bool) else parse_bool(str(v), "EnableMusicOnHold")
            result = replace(result, enable_music_on_hold=flag)
        if "MaxCallPickupAttempts" in changes:
            result = replace(result, max_call_pickup_attempts=parse_attempts(changes["MaxCallPickupAttempts"]))
        if "OnTimeoutURI" in changes:
            v = changes["OnTimeoutURI"]
            if v is not None and not isinstance(v, str):
                raise ValidationError("cps-uri", f"OnTimeoutURI must be a string, not {v!r}")
            result = replace(result, on_timeout_uri=parse_timeout_uri(v))
        return result


DEFAULTS = CpsSettings()


def effective_settings(scopes: Mapping[str, CpsSettings], site: str) -> tuple[str, CpsSettings]:
    """The settings that apply to a pool of ``site``: its site scope, else global."""
    site_scope = f"site:{site}"
    if site_scope in scopes:
        return site_scope, scopes[site_scope]
    return GLOBAL_SCOPE, scopes.get(GLOBAL_SCOPE, DEFAULTS)
