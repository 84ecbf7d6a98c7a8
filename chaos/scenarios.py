"""Named scenarios: one nemesis, or a set of them run one after another on one cluster."""

from __future__ import annotations

from callpark.chaos.nemesis import NEMESES

SETS: dict[str, tuple[str, ...]] = {
    "smoke-process": (
        "kill-worker",
        "kill-node",
        "pause-node",
        "kill-controller-leader",
        "kill-controller-standby",
        "pause-controller-leader",
    ),
    "smoke-etcd": ("kill-etcd-follower", "kill-etcd-leader", "etcd-quorum-loss"),
    "smoke-network": ("partition-node-etcd", "sip-loss-delay", "clock-jump"),
    "smoke-pool": ("kill-pool", "partition-pools"),
    # issue 12: writes etcd applies while the node never hears back, and colliding node names
    "smoke-lifecycle": ("unknown-outcome", "restart-namesake"),
}
SETS["all"] = tuple(
    n for s in ("smoke-process", "smoke-etcd", "smoke-network", "smoke-pool", "smoke-lifecycle") for n in SETS[s]
)

# The CI smoke set: every nemesis at least once, with fixed seeds.
SMOKE: tuple[tuple[str, int], ...] = (
    ("smoke-process", 101),
    ("smoke-etcd", 202),
    ("smoke-network", 303),
    ("smoke-pool", 404),
    ("smoke-lifecycle", 505),
)


def nemeses_of(scenario: str) -> tuple[str, ...]:
    """The nemesis names a scenario runs, in order; ValueError naming the scenario if unknown."""
    if scenario in SETS:
        return SETS[scenario]
    if scenario in NEMESES:
        return (scenario,)
    raise ValueError(f"unknown chaos scenario {scenario!r}; see `callpark chaos list`")


def catalogue() -> list[tuple[str, str]]:
    rows = [(name, "set: " + ", ".join(members)) for name, members in SETS.items()]
    rows += [(name, cls.summary) for name, cls in NEMESES.items()]
    return rows
