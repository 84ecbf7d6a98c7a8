"""The attack suite, run in a private network namespace (see :mod:`tests.attacks.netns`)."""

from __future__ import annotations

from pathlib import Path

from tests.attacks.netns import needs_root, run_inside

SUITE = [
    "tests/attacks/test_edge_attacks.py",
    "tests/attacks/nodes/test_node_attacks.py",
    "tests/edge/test_digest_replay.py",
    "tests/edge/test_flood.py",
]


@needs_root
def test_the_attack_suite_runs_in_a_private_network_namespace(tmp_path: Path) -> None:
    run_inside(tmp_path, SUITE, passed=5)
