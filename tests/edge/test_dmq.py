"""Registrations replicated between two real edges (DMQ): a phone registered at one is reached through the other."""

from __future__ import annotations

import dataclasses

import pytest

from callpark.edge import Edge, EdgeConfig
from callpark.edge.config import ConfigError
from callpark.edge.dmq import EdgeDmq
from callpark.netutil import LOOPBACK, free_port
from callpark.waiting import wait_until
from tests.edge.conftest import DOMAIN, Lab, needs_kamailio, needs_sipp, two_pool_config
from tests.edge.sipp import SippUas, register
from tests.edge.uac import Uac


def _pair() -> tuple[EdgeConfig, EdgeConfig]:
    a, b = two_pool_config((), ()), two_pool_config((), ())
    dmq_a, dmq_b = free_port(udp_too=True), free_port(udp_too=True)
    return (
        dataclasses.replace(a, dmq=EdgeDmq(port=dmq_a, peers=(f"{LOOPBACK}:{dmq_b}",))),
        dataclasses.replace(b, dmq=EdgeDmq(port=dmq_b, peers=(f"{LOOPBACK}:{dmq_a}",))),
    )


def _registered_at_a(lab: Lab) -> tuple[EdgeConfig, EdgeConfig, Edge, Edge, SippUas]:
    """Two peered edges and a phone ("alice") registered at the first."""
    cfg_a, cfg_b = _pair()
    edge_a = lab.edge(cfg_a, lab.root / "edge-a")
    edge_b = lab.edge(cfg_b, lab.root / "edge-b")
    alice = lab.uas("alice")
    register(edge_a.address, "alice", alice.port, lab.root)
    return cfg_a, cfg_b, edge_a, edge_b, alice


def test_bad_dmq_descriptions_are_refused_in_one_line() -> None:
    base = two_pool_config((), ())
    for dmq, words in (
        (EdgeDmq(port=base.port, peers=("127.0.0.1:5999",)), "not the SIP port"),
        (EdgeDmq(port=5999, peers=()), "at least one peer"),
        (EdgeDmq(port=5999, peers=("edge-b:5999",)), "IPv4 address and a port"),
    ):
        with pytest.raises(ConfigError, match=words):
            dataclasses.replace(base, dmq=dmq)


@needs_kamailio
@needs_sipp
def test_a_phone_registered_at_one_edge_is_reached_through_the_other(lab: Lab) -> None:
    _, cfg_b, edge_a, edge_b, alice = _registered_at_a(lab)
    contact = [f"sip:alice@{LOOPBACK}:{alice.port}"]
    assert edge_a.registrations() == {"alice": contact}
    wait_until(lambda: edge_b.registrations() == {"alice": contact}, timeout=10, what="alice replicated to edge b")
    with Uac(edge_b.address) as caller:
        call = caller.invite(f"sip:alice@{DOMAIN}")
        assert call.status == 200 and call.answered_by == "alice"
        assert caller.message(f"sip:alice@{LOOPBACK}", "parked on 7001").answered_by == "alice"
    # a KDMQ from anyone but the peer edge is refused, on the DMQ port and on the SIP port
    with Uac((LOOPBACK, cfg_b.dmq.port if cfg_b.dmq else 0), host="127.0.0.5") as intruder:
        assert intruder.request("KDMQ", f"sip:usrloc@{LOOPBACK}:{cfg_b.dmq.port if cfg_b.dmq else 0}").status == 403
    assert edge_b.counters()["untrusted_refused"] >= 1


@needs_kamailio
@needs_sipp
def test_a_restarted_edge_gets_every_registration_back_from_its_peer(lab: Lab) -> None:
    _, _, _, edge_b, _ = _registered_at_a(lab)
    wait_until(lambda: "alice" in edge_b.registrations(), timeout=10, what="alice replicated to edge b")
    edge_b.stop()
    edge_b.start()
    wait_until(lambda: "alice" in edge_b.registrations(), timeout=15, what="edge b synced from edge a at start")
