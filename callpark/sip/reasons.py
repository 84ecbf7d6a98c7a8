"""SIP reason phrases that park nodes send and the SIP edge matches on (both must agree).

A node that cannot reach etcd answers a park or retrieval with 503 and one of
:data:`ETCD_TROUBLE_REASONS`; the edge then sends the request straight to the backup pool
instead of trying this pool's other nodes (which likely cannot reach etcd either).
"""

from __future__ import annotations

__all__ = ["ETCD_TROUBLE_REASONS", "REASON_FENCED", "REASON_STATE_UNAVAILABLE"]

REASON_FENCED = "Park node fenced"
"""503 reason: the node's etcd lease was not renewed (or is lost); it must not decide."""

REASON_STATE_UNAVAILABLE = "Park state unavailable"
"""503 reason: the node's last etcd request failed or timed out."""

ETCD_TROUBLE_REASONS = (REASON_FENCED, REASON_STATE_UNAVAILABLE)
"""Every reason phrase meaning "this node cannot reach etcd"."""
