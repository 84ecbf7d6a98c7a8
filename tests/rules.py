"""Asserting which admin rule refused something."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from callpark.errors import ValidationError


@contextlib.contextmanager
def refused_by(rule: str) -> Iterator[None]:
    """The block must raise a :class:`ValidationError` that names ``rule``."""
    with pytest.raises(ValidationError) as info:
        yield
    assert info.value.rule == rule, info.value
