"""Bounded waits on conditions: the only way tests and managers wait for something."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """A condition did not hold before its deadline."""


def timeout_multiplier() -> float:
    """Scale factor for deadlines (``CALLPARK_TIMEOUT_MULTIPLIER``, default 1)."""
    try:
        return max(1.0, float(os.environ.get("CALLPARK_TIMEOUT_MULTIPLIER", "1")))
    except ValueError:
        return 1.0


def wait_until(
    condition: Callable[[], T | bool | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.02,
) -> T:
    """Poll ``condition`` until it returns a truthy value and return that value.

    :param timeout: seconds before giving up (scaled by :func:`timeout_multiplier`).
    :param what: a short description used in the :class:`WaitTimeout` message.
    :raises WaitTimeout: when the deadline passes; the last exception raised by the
        condition, if any, is chained.
    """
    deadline = time.monotonic() + timeout * timeout_multiplier()
    last_error: BaseException | None = None
    delay = interval
    while True:
        try:
            value = condition()
            if value:
                return value  # type: ignore[return-value]
            last_error = None
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last_error = exc
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {what}") from last_error
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
