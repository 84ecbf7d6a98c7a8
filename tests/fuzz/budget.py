"""The fuzz budget: one hypothesis profile for every target in tests/fuzz.

CI default: 120 examples per target, 1 s deadline per example (the whole folder runs in
well under a minute on 2 cores). ``CALLPARK_FUZZ_EXAMPLES=20000`` raises it for long runs.
The profile is applied per test (``@FUZZ``), never loaded globally, so other tests keep theirs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from callpark.errors import ValidationError

EXAMPLES = int(os.environ.get("CALLPARK_FUZZ_EXAMPLES", "120"))

settings.register_profile(
    "callpark-fuzz",
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=1),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
FUZZ = settings.get_profile("callpark-fuzz")

# any JSON value (NaN and infinities included: Python's json reads them)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


A = TypeVar("A")
R = TypeVar("R")


def value_or_refusal(fn: Callable[[A], R], arg: A, rule_prefix: str) -> R | None:
    """``fn(arg)``; None when it refuses with a one-line :class:`ValidationError` whose rule
    starts with ``rule_prefix`` (any other exception fails the test)."""
    try:
        return fn(arg)
    except ValidationError as exc:
        assert exc.rule.startswith(rule_prefix) and "\n" not in str(exc), exc
        return None


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def mutated(record: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``record`` with one field (possibly nested one level) replaced by any JSON value or removed."""
    paths = [(k,) for k in record] + [(k, n) for k, v in record.items() if isinstance(v, dict) for n in v]

    def apply(path: tuple[str, ...], value: Any, remove: bool) -> dict[str, Any]:
        out = json.loads(json.dumps(record))
        target = out
        for part in path[:-1]:
            target = target[part]
        if remove:
            target.pop(path[-1], None)
        else:
            target[path[-1]] = value
        return dict(out)

    return st.builds(apply, st.sampled_from(paths), json_values, st.booleans())


# raw etcd values: random bytes, JSON of anything, records one mutation away from valid
def raw_values(valid: dict[str, Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=200),
        json_values.map(dumps),
        mutated(valid).map(dumps),
        st.just(dumps(valid)[:-3]),  # truncated
        st.just(b"[" * 50_000),  # deep nesting
        st.just(b'{"v": 1, "x": "' + b"a" * 70_000 + b'"}'),  # huge
        st.just(b"\xff\xfe" + dumps(valid)),  # not UTF-8
    )
