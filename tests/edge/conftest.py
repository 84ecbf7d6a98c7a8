"""Fixtures for SIP edge tests: every process a test starts is stopped by that test, by PID."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Unpack

import pytest

from callpark.edge import Edge, EdgeConfig, OrbitRange, PoolSpec
from callpark.edge.process import KAMAILIO
from callpark.netutil import free_port
from tests.edge.sipp import SIPP, SippUas, UasOptions

DOMAIN = "callpark.test"

needs_kamailio = pytest.mark.skipif(
    shutil.which("kamailio") is None and not Path(KAMAILIO).exists(), reason="kamailio not installed"
)
needs_sipp = pytest.mark.skipif(not Path(SIPP).exists(), reason="sipp not installed")


class Lab:
    """Starts SIPp stand-ins and edges for one test and stops them all in close()."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._uas: list[SippUas] = []
        self._edges: list[Edge] = []

    def uas(self, name: str, **options: Unpack[UasOptions]) -> SippUas:
        """A started SIPp UAS (a stand-in park node or phone) on its own port."""
        uas = SippUas(name, self.root, **options)
        self._uas.append(uas)
        return uas.start()

    def edge(self, config: EdgeConfig, run_dir: Path | None = None, *, start: bool = True) -> Edge:
        """An edge for ``config`` (started unless ``start`` is False); close() stops it."""
        edge = Edge(config, run_dir or self.root / "edge")
        self._edges.append(edge)
        if start:
            edge.start()
        return edge

    def close(self) -> None:
        errors: list[BaseException] = []
        for edge in reversed(self._edges):
            try:
                edge.stop()
            except Exception as exc:  # noqa: BLE001 - stop everything, report afterwards
                errors.append(exc)
        for uas in reversed(self._uas):
            try:
                uas.stop()
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with contextlib.closing(Lab(tmp_path)) as lab:
        yield lab


def two_pool_config(
    primary: tuple[str, ...],
    backup: tuple[str, ...],
    *,
    extra_pools: tuple[PoolSpec, ...] = (),
    extra_ranges: tuple[OrbitRange, ...] = (),
) -> EdgeConfig:
    """Pool "a" (set 1, backup "b") and pool "b" (set 2, backup "a"); orbits 7000-7999 on a,
    *101-*199 on b."""
    return EdgeConfig(
        port=free_port(udp_too=True),
        domain=DOMAIN,
        pools=(
            PoolSpec(name="a", nodes=primary, backup="b"),
            PoolSpec(name="b", nodes=backup, backup="a"),
            *extra_pools,
        ),
        ranges=(
            OrbitRange(start="7000", end="7999", pool="a", name="park-a"),
            OrbitRange(start="*101", end="*199", pool="b", name="park-b"),
            *extra_ranges,
        ),
    )
