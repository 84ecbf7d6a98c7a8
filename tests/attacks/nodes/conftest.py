"""Fixtures of the node attacks: the node tests' lab (real etcd, nodes, edge, pjsua2 phones)."""

from tests.node.conftest import lab

__all__ = ["lab"]
