"""Fuzz the deployment TOML: a Deployment or one-line DeploymentError, nothing else."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from callpark import deployment
from callpark.deployment import DeploymentError
from tests.fuzz.budget import FUZZ

BASE = (deployment.DEFAULT_LOCAL_FILE).read_text()
SECTIONS = ["etcd", "pool", "range", "cps", "moh", "timings", "edge", "sip_tls", "http", "other"]
KEYS = [
    "name",
    "site",
    "backup",
    "nodes",
    "workers",
    "start",
    "end",
    "pool",
    "type",
    "members",
    "port",
    "lease_ttl_s",
    "global",
    "site:site-a",
    "CallPickupTimeoutThreshold",
    "MaxCallPickupAttempts",
    "pool-a",
    "cert",
    "key",
    "https",
    "ca",
    "admin_token_file",
]
scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["pool-a", "7000", "7099", "default", "00:00:30", "auto", "site-a"]),
)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    max_leaves=10,
)


def toml_value(value: Any) -> str:
    """Inline TOML for ``value`` (strings and keys as JSON strings, which TOML accepts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def check(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deployment.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            dep = deployment.load(path)
        except DeploymentError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            return
        assert isinstance(dep, deployment.Deployment)


@FUZZ
@given(st.dictionaries(st.sampled_from(SECTIONS), values, max_size=5))
def test_structured_documents(doc: dict[str, Any]) -> None:
    check("".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in doc.items()))


@FUZZ
@given(st.text(max_size=200) | st.binary(max_size=100).map(lambda b: b.decode("latin-1")))
def test_arbitrary_text(text: str) -> None:
    check(text)


def test_deep_nesting_and_the_shipped_file() -> None:
    check("a = " + "[" * 5000 + "]" * 5000 + "\n")
    check(BASE)
