"""Steps the node tests share: a node behind the edge with its first phones, and a retrieval's end."""

from __future__ import annotations

from typing import Any

from callpark.lab.nodeproc import NodeProcess
from callpark.lab.phone import Phone
from callpark.lab.phone.flows import connected_call, talking
from tests.node.conftest import ParkLab


def behind_the_edge(
    lab: ParkLab, *, workers: int = 1, node_args: dict[str, Any] | None = None, **settings: Any
) -> tuple[NodeProcess, Phone, Phone]:
    """Configure Call Park (``settings`` as :meth:`ParkLab.configure`), start a node that sends
    through the edge (``node_args`` as :meth:`ParkLab.node`) and the edge; register the parker
    and alice (who answers by herself). Returns the node, the parker and alice."""
    lab.configure(**settings)
    node = lab.node(workers=workers, edge=True, **(node_args or {}))
    lab.start_edge()
    return node, lab.phone("parker", via_edge=True), lab.phone("alice", via_edge=True, auto_answer=True)


def check_retrieved(
    lab: ParkLab, node: NodeProcess, parked: Phone, retriever: Phone, park_id: str, result: str
) -> None:
    """``retriever`` got ``parked``'s call: they hear each other, the park ended as retrieved, and
    the node counted one retrieval under ``result``."""
    p_call = connected_call(parked, remote_contains=f"{retriever.user}@")
    r_call = connected_call(retriever, remote_contains=f"{parked.user}@")
    assert talking(parked, p_call, retriever, r_call), f"{parked.user} and {retriever.user} do not hear each other"
    outcome = lab.wait_outcome(park_id)
    assert outcome == "retrieved", outcome
    count = node.metric("callpark_retrievals_total", result=result)
    assert count == 1, f"callpark_retrievals_total{{result={result}}} is {count}"
