"""The generated kamailio.cfg and dispatcher list: content, validation, and `kamailio -c`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from callpark.edge import (
    ConfigError,
    EdgeConfig,
    EdgeError,
    EdgeTimers,
    OrbitRange,
    PoolSpec,
    check_config,
    render_dispatcher_list,
    render_kamailio_cfg,
)
from callpark.edge.config import parse_orbit
from callpark.errors import ValidationError
from callpark.model.orbits import OrbitRange as ModelRange
from callpark.model.orbits import validate_range_shape
from tests.edge.conftest import needs_kamailio


def sample(**overrides: object) -> EdgeConfig:
    fields: dict[str, object] = {
        "port": 25060,
        "domain": "callpark.test",
        "pools": (
            PoolSpec(name="a", nodes=("127.0.0.1:16001", "127.0.0.1:16002"), backup="b"),
            PoolSpec(name="b", nodes=("127.0.0.1:16003",), backup="a"),
        ),
        "ranges": (
            OrbitRange(start="7000", end="7999", pool="a"),
            OrbitRange(start="*101", end="*199", pool="b"),
            OrbitRange(start="#110", end="#119", pool="a"),
        ),
    }
    fields.update(overrides)
    return EdgeConfig(**fields)  # type: ignore[arg-type]


def write(tmp_path: Path, cfg: EdgeConfig, rpc_socket: str | None = "udp:127.0.0.1:25061") -> Path:
    ds = tmp_path / "dispatcher.list"
    ds.write_text(render_dispatcher_list(cfg))
    path = tmp_path / "kamailio.cfg"
    path.write_text(render_kamailio_cfg(cfg, dispatcher_list=ds, rpc_socket=rpc_socket))
    return path


def test_dispatcher_list_numbers_sets_by_pool_order() -> None:
    cfg = sample()
    assert cfg.set_id("a") == 1 and cfg.set_id("b") == 2
    lines = [ln for ln in render_dispatcher_list(cfg).splitlines() if not ln.startswith("#")]
    assert lines == [
        "1 sip:127.0.0.1:16001 0 0 pool=a",
        "1 sip:127.0.0.1:16002 0 0 pool=a",
        "2 sip:127.0.0.1:16003 0 0 pool=b",
    ]


def test_cfg_has_the_routing_rules(tmp_path: Path) -> None:
    text = write(tmp_path, sample()).read_text()
    for needle in (
        'save("location")',
        'lookup("location")',
        'modparam("usrloc", "db_mode", 0)',
        'modparam("dispatcher", "ds_probing_mode", 1)',
        'modparam("dispatcher", "ds_ping_interval", 1)',
        'modparam("tm", "fr_timer", 1000)',
        "failure_route[DS_FAILOVER]",
        "ds_next_dst()",
        "record_route()",
        "loose_route()",
        "mf_process_maxfwd_header",
        "sanity_check",
        "s.unescape.user",
        # range *101..*199 -> pool b (set 2, backup set 1)
        '$var(orbit_prefix) == "*" && $var(orbit_len) == 3 && $var(orbit_num) >= 101',
        '$var(orbit_prefix) == "-" && $var(orbit_len) == 4 && $var(orbit_num) >= 7000',
        '$var(orbit_prefix) == "#" && $var(orbit_len) == 3',
        'if ($rU == "park-b")',
        'modparam("jsonrpcs", "dgram_socket", "udp:127.0.0.1:25061")',
    ):
        assert needle in text, needle
    assert "{{" not in text and "}}" not in text


@needs_kamailio
@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"tcp": True},
        {"ranges": ()},
        {"default_pool": "b", "timers": EdgeTimers(ping_interval_s=2, node_timeout_ms=500)},
        {"pools": (PoolSpec(name="a", nodes=("127.0.0.1:16001",)), PoolSpec(name="empty", backup="a")),
         "ranges": (OrbitRange(start="1", end="9", pool="empty"),)},
    ],
    ids=["default", "tcp", "no-ranges", "timers", "empty-pool"],
)  # fmt: skip
def test_rendered_config_passes_kamailio_check(tmp_path: Path, variant: dict[str, object]) -> None:
    path = write(tmp_path, sample(**variant))
    check_config(path)


@needs_kamailio
def test_config_without_rpc_passes_kamailio_check(tmp_path: Path) -> None:
    path = write(tmp_path, sample(), rpc_socket=None)
    assert "jsonrpcs.so" not in path.read_text()
    check_config(path)


@needs_kamailio
def test_check_config_rejects_a_broken_config(tmp_path: Path) -> None:
    path = write(tmp_path, sample())
    path.write_text(path.read_text().replace("route(PARK);", "no_such_function();"))
    with pytest.raises(EdgeError):
        check_config(path)


def test_every_referenced_route_is_defined(tmp_path: Path) -> None:
    """`kamailio -c` accepts route(UNDEFINED) silently (5.6.3), so check names here."""
    text = write(tmp_path, sample()).read_text()
    called = set(re.findall(r"\broute\((\w+)\)", text))
    defined = set(re.findall(r"^route\[(\w+)\]", text, re.M))
    assert called and called <= defined, called - defined
    failure_called = set(re.findall(r'\bt_on_failure\("(\w+)"\)', text))
    failure_defined = set(re.findall(r"^failure_route\[(\w+)\]", text, re.M))
    assert failure_called and failure_called <= failure_defined


@pytest.mark.parametrize(
    ("orbit", "pool"),
    [
        ("7000", "a"), ("7999", "a"), ("6999", None), ("8000", None), ("700", None), ("07000", None),
        ("*101", "b"), ("%2A150", "b"), ("%2a199", "b"), ("100", None), ("*100", None), ("#100", None),
        ("#115", "a"), ("%23115", "a"), ("#0115", None), ("*0150", None), ("park", None), ("", None),
    ],
)  # fmt: skip
def test_pool_for_orbit(orbit: str, pool: str | None) -> None:
    assert sample().pool_for_orbit(orbit) == pool


def test_parse_orbit() -> None:
    assert parse_orbit("%2A123") == ("*", "123")
    assert parse_orbit("42") == ("", "42")
    for bad in ("12a", "%2A0123", "042", "*100"):
        with pytest.raises(ConfigError):
            parse_orbit(bad)


@pytest.mark.parametrize(("start", "end"), [("07000", "07999"), ("*0101", "*0199"), ("0", "9")])
def test_leading_zero_ranges_are_refused_as_by_the_model(start: str, end: str) -> None:
    """The edge uses the admin model's orbit grammar: a leading zero is refused, not routed."""
    with pytest.raises(ValidationError, match="leading zero"):
        validate_range_shape(ModelRange("r", start, end, "a"))
    with pytest.raises(ConfigError, match="leading zero"):
        sample(ranges=(OrbitRange(start=start, end=end, pool="a"),))


@pytest.mark.parametrize(
    "overrides",
    [
        {"ranges": (OrbitRange(start="7000", end="7999", pool="a"), OrbitRange(start="7500", end="8500", pool="b"))},
        {"ranges": (OrbitRange(start="7000", end="7999", pool="nope"),)},
        {"pools": (PoolSpec(name="a", backup="zz"),)},
        {"pools": (PoolSpec(name="a"), PoolSpec(name="a"))},
        {"pools": ()},
        {"default_pool": "zz"},
        {"host": "localhost"},
        {"domain": "bad domain"},
        {"park_user": "9park"},
    ],
)  # fmt: skip
def test_inconsistent_descriptions_are_rejected(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        sample(**overrides)


@pytest.mark.parametrize(
    "make",
    [
        lambda: OrbitRange(start="*101", end="199", pool="a"),
        lambda: OrbitRange(start="100", end="1000", pool="a"),
        lambda: OrbitRange(start="200", end="100", pool="a"),
        lambda: PoolSpec(name="a", nodes=("127.0.0.1",)),
        lambda: PoolSpec(name="a", nodes=("127.0.0.1:0",)),
        lambda: PoolSpec(name="a", backup="a"),
        lambda: PoolSpec(name="a b"),
        lambda: EdgeTimers(ping_interval_s=0),
    ],
)
def test_bad_parts_are_rejected(make: object) -> None:
    with pytest.raises(ConfigError):
        make()  # type: ignore[operator]


def test_with_nodes_keeps_set_ids() -> None:
    cfg = sample().with_nodes("a", ("127.0.0.1:17000",))
    assert cfg.set_id("a") == 1
    assert cfg.pool("a").nodes == ("127.0.0.1:17000",)
    assert cfg.pool("a").backup == "b"
