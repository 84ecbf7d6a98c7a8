"""Interop lab: the node tests' ``lab`` fixture (real etcd, node, pjsua2 phones) and the DR
tests' ``dr`` fixture (two paired pools, controllers, the edge) reused as they are."""

from __future__ import annotations

from tests.dr.conftest import dr  # noqa: F401
from tests.node.conftest import lab  # noqa: F401
