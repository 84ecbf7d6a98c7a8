"""Every deployment example under deploy/ passes `callpark config check`, and one that listens
beyond loopback passes only because it is secured: without its [security] section, or without
the key that closes its registrar, the check refuses it with one line."""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path

import pytest

from callpark import deployment
from tests.conftest import run_console
from tests.deploy.promql import REPO

EXAMPLES = sorted((REPO / "deploy").rglob("*.toml"))


def _exposed(text: str) -> bool:
    raw = tomllib.loads(text)
    hosts = list(raw.get("edge", {}).get("hosts", []))
    for pool in raw.get("pool", []):
        hosts += pool.get("hosts", [])
    return any(not ipaddress.ip_address(h).is_loopback for h in hosts)


def _without(text: str, *, section: str | None = None, key: str | None = None) -> str:
    """``text`` without a whole ``[section]`` (up to the next table) or without ``key`` lines."""
    if key is not None:
        return "".join(line for line in text.splitlines(keepends=True) if not re.match(rf"\s*{key}\s*=", line))
    assert section is not None
    start = text.index(f"[{section}]")
    following = re.search(r"^\[", text[start + 1 :], re.MULTILINE)
    return text[:start] + (text[start + 1 + following.start() :] if following else "")


def test_there_are_examples() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"local-cluster.toml", "chaos-cluster.toml", "callpark.toml"} <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: str(p.relative_to(REPO)))
def test_each_example_passes_config_check_only_when_secured(example: Path, tmp_path: Path) -> None:
    result = run_console("config", "check", str(example))
    assert result.returncode == 0, result.stderr
    text = example.read_text(encoding="utf-8")
    if not _exposed(text):
        return  # loopback only: the secure defaults (edge and nodes trust loopback, nodes the edge) suffice
    sec = deployment.load(example).sip_security
    assert sec.peers_given or sec.digest is not None
    variants = {"[config-open-deployment]": _without(text, section="security")}
    if sec.digest is None:
        variants["[config-open-registrar]"] = _without(text, key="register_peers")
    for rule, variant in variants.items():
        copy = example.parent / f".unsecured-{example.name}"
        try:
            copy.write_text(variant, encoding="utf-8")
            refused = run_console("config", "check", str(copy))
        finally:
            copy.unlink(missing_ok=True)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert rule in refused.stderr, refused.stderr
