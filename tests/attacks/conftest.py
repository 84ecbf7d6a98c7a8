"""Fixtures of the attack suite: the edge tests' lab (SIPp stand-ins, Kamailio edges)."""

from tests.edge.conftest import lab

__all__ = ["lab"]
