"""Flood limit at the edge: one source flooding INVITEs and REGISTERs is dropped (pike) and
counted, while another source still parks. Loopback only, bounded: 300 datagrams in well under
a second, from 127.0.0.2; the legitimate caller is 127.0.0.3."""

from __future__ import annotations

import dataclasses
import secrets
import socket
import time

from callpark.edge.sipping import build_request, new_tag
from tests.edge.conftest import DOMAIN, Lab, needs_kamailio, needs_sipp, two_pool_config
from tests.edge.uac import Uac

FLOOD = 300


def _flood(edge: tuple[str, int], host: str) -> int:
    """Send FLOOD requests (INVITE and REGISTER alternately) without waiting; the replies seen."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, 0))
        local = (host, int(sock.getsockname()[1]))
        for i in range(FLOOD):
            method, uri = ("INVITE", f"sip:7001@{DOMAIN}") if i % 2 else ("REGISTER", f"sip:{DOMAIN}")
            request = build_request(
                method,
                uri,
                local=local,
                from_uri=f"sip:flood@{DOMAIN}",
                to_uri=uri,
                call_id=secrets.token_hex(8),
                cseq=1,
                from_tag=new_tag(),
                headers=[("Contact", f"<sip:flood@{host}:{local[1]}>")],
            )
            sock.sendto(request, edge)
        replies = 0
        sock.settimeout(1.0)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            try:
                sock.recv(65535)
            except TimeoutError:
                break
            replies += 1
        return replies
    finally:
        sock.close()


@needs_kamailio
@needs_sipp
def test_a_flooding_source_is_dropped_and_counted_while_another_source_still_parks(lab: Lab) -> None:
    node = lab.uas("a1")
    config = dataclasses.replace(two_pool_config((node.address,), ()), flood_requests=20, flood_window_s=2, log_level=0)
    edge = lab.edge(config)
    assert edge.flood_blocked() == 0
    replies = _flood(edge.address, "127.0.0.2")
    blocked = edge.flood_blocked()
    assert blocked >= FLOOD // 2, (blocked, replies)
    assert replies < FLOOD // 2, replies  # dropped requests get no reply (no amplification)
    with Uac(edge.address, host="127.0.0.2") as flooder:
        assert flooder.invite(f"sip:park@{DOMAIN}", timeout=1.0).status is None  # still blocked
    with Uac(edge.address, host="127.0.0.3") as caller:
        call = caller.invite(f"sip:park@{DOMAIN}")
        assert call.status == 200 and call.answered_by == "a1" and call.bye_status == 200
    assert "flood from 127.0.0.2" in edge.log_tail(200)
