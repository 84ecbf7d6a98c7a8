"""The edge's busy lamp field (presence + presence_dialoginfo) against a real Kamailio: who may
PUBLISH and SUBSCRIBE, and how a dead holder's stale publication is outvoted.

Publishers here are raw UDP sockets on a park node's address (127.0.0.1; the dispatcher list
names 127.0.0.1 ports) or elsewhere on loopback (127.0.0.2: not a park node)."""

from __future__ import annotations

import dataclasses
import secrets
import socket
from collections.abc import Iterator

import pytest

from callpark.edge import Edge
from callpark.edge.credentials import DigestAuth, ha1
from callpark.edge.sipping import build_request, new_tag
from callpark.lab.blf import BlfWatcher
from callpark.netutil import LOOPBACK, free_port
from callpark.node.blf import CONFIRMED, TERMINATED, dialog_info, orbit_uri
from callpark.sip.message import SipMessage, parse_datagram
from tests.edge.conftest import DOMAIN, Lab, needs_kamailio, two_pool_config

pytestmark = needs_kamailio

NOT_A_NODE = "127.0.0.2"


def publish(
    edge: Edge,
    orbit: str,
    body: bytes,
    *,
    source: str = LOOPBACK,
    etag: str | None = None,
    expires: int = 60,
    event: str = "dialog",
) -> SipMessage:
    """One PUBLISH from ``source`` to the edge; its final response."""
    uri = orbit_uri(orbit, DOMAIN)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(3.0)
        headers = [("Event", event), ("Expires", str(expires)), ("Content-Type", "application/dialog-info+xml")]
        if etag:
            headers.append(("SIP-If-Match", etag))
        request = build_request(
            "PUBLISH",
            uri,
            local=(source, sock.getsockname()[1]),
            from_uri=f"sip:park@{DOMAIN}",
            to_uri=uri,
            call_id=secrets.token_hex(8),
            cseq=1,
            from_tag=new_tag(),
            headers=headers,
            body=body,
        )
        sock.sendto(request, (edge.config.host, edge.config.port))
        while True:
            reply = parse_datagram(sock.recv(65535))
            if (reply.status_code or 0) >= 200:
                return reply


def nodes() -> tuple[tuple[str], tuple[str]]:
    """Park node addresses for the dispatcher list (nothing listens: only the address matters)."""
    return (f"{LOOPBACK}:{free_port(udp_too=True)}",), (f"{LOOPBACK}:{free_port(udp_too=True)}",)


@pytest.fixture
def edge(lab: Lab) -> Iterator[Edge]:
    yield lab.edge(two_pool_config(*nodes()))


def body(state: str, park_id: str = "p1") -> bytes:
    return dialog_info(orbit_uri("7001", DOMAIN), park_id, state, "sip:alice@callpark.test")


def watcher(edge: Edge, orbit: str = "7001") -> BlfWatcher:
    return BlfWatcher((edge.config.host, edge.config.port), f"sip:{orbit}@{DOMAIN}")


def test_only_park_nodes_publish(edge: Edge) -> None:
    refused = publish(edge, "7001", body(CONFIRMED), source=NOT_A_NODE)
    assert refused.status_code == 403 and "park nodes" in refused.reason
    accepted = publish(edge, "7001", body(CONFIRMED))
    assert accepted.status_code == 200 and accepted.header("SIP-ETag")
    assert publish(edge, "6001", body(CONFIRMED)).status_code == 404, "not an orbit of a range"
    assert publish(edge, "7001", body(CONFIRMED), event="presence").status_code == 489


def test_subscribe_to_an_orbit_sees_the_published_state(edge: Edge) -> None:
    publish(edge, "7001", body(CONFIRMED))
    with watcher(edge) as lamp:
        reply = lamp.subscribe()
        assert reply is not None and reply.status_code == 200
        first = lamp.wait_state(CONFIRMED, dialog_id="p1", timeout=5)
        assert first.dialogs[0].remote_target == orbit_uri("7001", DOMAIN)
    with watcher(edge) as lamp:
        reply = lamp.subscribe(event="presence")
        assert reply is not None and reply.status_code == 489


def test_the_new_holders_publication_outvotes_the_dead_holders(edge: Edge) -> None:
    """A dead holder's confirmed is never withdrawn; the new holder's publication of the same
    park id (dialog id) replaces it, so its terminated darkens the lamp; a new park's
    confirmed lights it again over the terminated one."""
    publish(edge, "7001", body(CONFIRMED))  # the dead holder's, never withdrawn
    with watcher(edge) as lamp:
        assert lamp.subscribe() is not None
        lamp.wait_state(CONFIRMED, dialog_id="p1", timeout=5)
        since = lamp.mark()
        publish(edge, "7001", body(CONFIRMED))  # the new holder's (its own publication)
        lamp.wait_state(CONFIRMED, dialog_id="p1", since=since, timeout=5)
        since = lamp.mark()
        reply = publish(edge, "7001", body(TERMINATED))
        assert reply.status_code == 200
        lamp.wait_state(TERMINATED, dialog_id="p1", since=since, timeout=5)
        since = lamp.mark()
        publish(edge, "7001", body(CONFIRMED, park_id="p2"))
        lamp.wait_state(CONFIRMED, dialog_id="p2", since=since, timeout=5)


def test_with_digest_auth_a_subscriber_must_authenticate_and_nodes_still_publish(lab: Lab) -> None:
    auth = DigestAuth(DOMAIN, {"alice": ha1("alice", DOMAIN, "s3cret-pw")})
    secured = lab.edge(dataclasses.replace(two_pool_config(*nodes()), auth=auth))
    with watcher(secured) as lamp:
        reply = lamp.subscribe()
        assert reply is not None and reply.status_code == 407, "SUBSCRIBE is challenged like any request"
        assert lamp.mark() == 0, "no NOTIFY without credentials"
    assert publish(secured, "7001", body(CONFIRMED)).status_code == 200
    assert publish(secured, "7001", body(CONFIRMED), source=NOT_A_NODE).status_code == 403
