"""Interop lab: the node tests' ``lab`` fixture (real etcd, node, pjsua2 phones) reused as is."""

from __future__ import annotations

from tests.node.conftest import lab  # noqa: F401
