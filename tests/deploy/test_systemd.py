"""deploy/systemd: the units pass `systemd-analyze verify` and `security`, and their command
lines are ones the callpark CLI accepts with the example settings.

systemd-analyze works on unit files without a running systemd. The units name the
production install path /opt/callpark/venv/bin/callpark; verify checks that ExecStart
binaries exist, so the copies verified here point at this checkout's venv instead.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from callpark.cli import app as cli
from callpark.cli import dr as dr_cli
from callpark.cli import service
from callpark.dr import main as controller_main
from callpark.edge import sync
from callpark.errors import CallparkError
from callpark.node import main as node_main
from tests.deploy.promql import REPO

SYSTEMD_DIR = REPO / "deploy" / "systemd"
INSTALL_BIN = "/opt/callpark/venv/bin/callpark"
CALLPARK_BIN = Path(sys.executable).parent / "callpark"
ANALYZE = shutil.which("systemd-analyze")
ETCD = "/usr/bin/etcd"
SERVICES = [
    "callpark-etcd.service",
    "callpark-controller.service",
    "callpark-node@.service",
    "callpark-edge-sync.service",
]
UNITS = [*SERVICES, "callpark-etcd-backup.service", "callpark-etcd-backup.timer"]
# (file, the name verified: the template is verified through an instance)
VERIFIED = [
    ("callpark-etcd.service", "callpark-etcd.service"),
    ("callpark-controller.service", "callpark-controller.service"),
    ("callpark-edge-sync.service", "callpark-edge-sync.service"),
    ("callpark-node@.service", "callpark-node@park-a1.service"),
    ("callpark-etcd-backup.service", "callpark-etcd-backup.service"),
    ("callpark-etcd-backup.timer", "callpark-etcd-backup.timer"),
]
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (Debian package systemd)")


def unit_lines(name: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of a unit file, in order (keys may repeat)."""
    section = ""
    result: list[tuple[str, str, str]] = []
    for raw in (SYSTEMD_DIR / name).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m.group(1)
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{name}: not key=value: {raw!r}"
        result.append((section, key.strip(), value.strip()))
    return result


def values(name: str, key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in unit_lines(name) if s == section and k == key]


def env_file(name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (SYSTEMD_DIR / name).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def expand(command: str, env: dict[str, str], instance: str) -> list[str]:
    """A unit's command line as systemd runs it: ${VAR} is one word, $VAR splits, %i."""
    words: list[str] = []
    for word in shlex.split(command.lstrip("-").replace("%i", instance)):
        if m := re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word):
            words += env[m.group(1)].split()
        else:
            words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env[m.group(1)], word))
    return words


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """The units, pointed at this checkout's callpark instead of the production install path."""
    if not CALLPARK_BIN.exists():
        pytest.skip(f"{CALLPARK_BIN} missing (install the package into the venv)")
    if not Path(ETCD).exists():
        pytest.skip(f"{ETCD} missing (Debian package etcd-server)")
    for name in UNITS:
        text = (SYSTEMD_DIR / name).read_text(encoding="utf-8")
        (tmp_path / name).write_text(text.replace(INSTALL_BIN, str(CALLPARK_BIN)), encoding="utf-8")
    return tmp_path


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False)


@needs_analyze
@pytest.mark.parametrize(("file", "unit"), VERIFIED)
def test_systemd_analyze_verify(unit_dir: Path, file: str, unit: str) -> None:
    result = analyze("verify", "--man=no", str(unit_dir / unit))
    # verify exits 0 on many problems (unknown keys, bad values): any diagnostic fails
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


@needs_analyze
def test_systemd_analyze_verify_reports_a_broken_template(unit_dir: Path) -> None:
    template = unit_dir / "callpark-node@.service"
    template.write_text(template.read_text().replace("KillMode=mixed", "KillMode=mixd"))
    result = analyze("verify", "--man=no", str(unit_dir / "callpark-node@park-a1.service"))
    assert "KillMode" in result.stdout + result.stderr or "kill mode" in result.stdout + result.stderr


@needs_analyze
@pytest.mark.parametrize(("file", "unit"), [v for v in VERIFIED if v[1].endswith(".service")])
def test_hardening_exposure_is_low(unit_dir: Path, file: str, unit: str) -> None:
    """`systemd-analyze security` scores 0 (locked down) to 10 (exposed); 2.0 is its 'OK' band."""
    result = analyze("security", "--offline=yes", "--threshold=20", "--no-pager", str(unit_dir / unit))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_restarts_and_is_installable(name: str) -> None:
    assert values(name, "Restart") and values(name, "Restart")[0] in ("on-failure", "always")
    assert values(name, "WantedBy", "Install") == ["multi-user.target"]
    for key in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "CapabilityBoundingSet", "SystemCallFilter"):
        assert values(name, key), f"{name}: no {key}="
    assert values(name, "User") and values(name, "User")[0] != "root"


def test_node_unit_drains_before_sigterm() -> None:
    name = "callpark-node@.service"
    stop = values(name, "ExecStop")
    assert len(stop) == 1 and re.search(r"callpark dr drain --node \$\{CALLPARK_POOL\}/%i\b", stop[0]), stop
    assert values(name, "KillSignal") == ["SIGTERM"]
    assert values(name, "KillMode") == ["mixed"]  # the supervisor stops its own workers
    # the stop timeout covers the drain plus the workers' 5 s shutdown
    timeout = int(values(name, "TimeoutStopSec")[0].removesuffix("s"))
    drain = int(env_file("node.env.example")["CALLPARK_DRAIN_TIMEOUT"])
    assert timeout >= drain + 10
    # a restarted node must not stay draining
    assert any("dr drain" in v and "--cancel" in v for v in values(name, "ExecStartPre"))


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """Parse ``callpark ARGS`` with the real parser (argparse exits on an unknown flag)."""
    assert argv[0] == INSTALL_BIN, argv
    return cli.build_parser().parse_args(argv[1:])


def test_node_unit_command_lines_parse_and_timings_validate() -> None:
    env = env_file("callpark.env.example") | env_file("node.env.example")
    name = "callpark-node@.service"
    start = parse_cli(expand(values(name, "ExecStart")[0], env, "park-a1"))
    assert vars(start)["func"] is service.cmd_node
    assert (vars(start)["pool"], vars(start)["name"], vars(start)["http_port"]) == ("pool-a", "park-a1", 9401)
    node_main.lease_timings(start).validate()
    stop = vars(parse_cli(expand(values(name, "ExecStop")[0], env, "park-a1")))
    assert stop["func"] is dr_cli.cmd_dr_drain and stop["node"] == "pool-a/park-a1" and not stop["cancel"]
    pre = vars(parse_cli(expand(values(name, "ExecStartPre")[0], env, "park-a1")))
    assert pre["func"] is dr_cli.cmd_dr_drain and pre["cancel"]


def test_controller_unit_command_line_parses_and_timings_validate() -> None:
    env = env_file("callpark.env.example") | env_file("controller.env.example")
    args = parse_cli(expand(values("callpark-controller.service", "ExecStart")[0], env, ""))
    assert vars(args)["func"] is service.cmd_controller
    controller_main.controller_config(args)  # validates the timings together


def test_edge_sync_unit_command_line_parses() -> None:
    env = env_file("callpark.env.example") | env_file("edge-sync.env.example")
    args = parse_cli(expand(values("callpark-edge-sync.service", "ExecStart")[0], env, ""))
    assert vars(args)["func"] is service.cmd_edge_sync
    assert sync.parse_sets(args.set) == {"pool-a": 1, "pool-b": 2}
    assert args.rpc == "/run/kamailio/callpark-rpc.sock"


def test_etcd_backup_timer_runs_the_backup_service() -> None:
    assert values("callpark-etcd-backup.timer", "OnCalendar", "Timer") == ["hourly"]
    assert values("callpark-etcd-backup.timer", "WantedBy", "Install") == ["timers.target"]
    command = values("callpark-etcd-backup.service", "ExecStart")[0]
    assert "etcdctl" in command and "snapshot save" in command


def test_etcd_unit_runs_etcd_with_the_member_env_file() -> None:
    assert values("callpark-etcd.service", "ExecStart") == [ETCD]
    assert values("callpark-etcd.service", "Type") == ["notify"]
    assert values("callpark-etcd.service", "EnvironmentFile") == ["/etc/callpark/etcd.env"]


def test_the_node_example_resolves_its_edge_and_trusts_only_the_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    """CALLPARK_EDGE is a host name: resolved at start, its addresses are the trusted peers (with
    the other site's edge from --trusted-peers); a phone's address is not, and an edge name that
    does not resolve stops the node with one line."""
    env = env_file("callpark.env.example") | env_file("node.env.example")
    start = parse_cli(expand(values("callpark-node@.service", "ExecStart")[0], env, "park-a1"))
    real = socket.getaddrinfo

    def fake_dns(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "edge.primary.callpark.example":
            return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("10.1.0.10", 0))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)
    config = node_main.config_from_args(start)
    peers = config.peers()
    assert peers.allows("10.1.0.10:5060") and peers.allows("10.2.0.10:5060")
    assert not peers.allows("10.1.64.20:5060") and not peers.allows("127.0.0.1:5060")
    assert config.is_edge("10.1.0.10:5060") and not config.is_edge("10.1.0.10:5999")
    monkeypatch.setattr(socket, "getaddrinfo", real)
    start.edge = "edge.invalid:5060"
    unresolved = r"^\[trusted-peers\] --edge edge.invalid:5060: cannot resolve 'edge.invalid'"
    with pytest.raises(CallparkError, match=unresolved):
        node_main.config_from_args(start)
