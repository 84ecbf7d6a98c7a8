"""What every part of a park node shares: configuration, store, park table, metrics.

The parts (:mod:`~callpark.node.calls`, :mod:`~callpark.node.decisions`, ...) derive from
:class:`NodePart`; the supervisor builds one :class:`NodeContext` and hands it to each.
Nothing here is mutable but the objects it points to (each documents its own locking).
A node's identity is ``pool/name`` plus its incarnation (:class:`~callpark.store.records.NodeId`):
compare holders with ``me.holds(holder)``, never by the bare name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from callpark.node.config import NodeConfig
from callpark.node.metrics import NodeMetrics
from callpark.store.kv import KV
from callpark.store.parking import ParkTable
from callpark.store.records import NodeId, RecordDecoder


@dataclass(frozen=True)
class NodeContext:
    """The node's shared objects; ``is_valid`` says whether our lease still lets us write."""

    config: NodeConfig
    kv: KV
    table: ParkTable
    metrics: NodeMetrics
    decoder: RecordDecoder
    is_valid: Callable[[], bool]
    me: NodeId  # pool/name and this process's incarnation (random per start)


class NodePart:
    """Base of the node's parts: the shared context, unpacked into attributes."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.kv = ctx.kv
        self.table = ctx.table
        self.metrics = ctx.metrics
        self.decoder = ctx.decoder
        self.is_valid = ctx.is_valid
        self.me = ctx.me
