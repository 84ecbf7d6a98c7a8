"""The tiny SIP helper: request building and the OPTIONS ping (parsing: tests/sip/test_message.py)."""

from __future__ import annotations

import socket
import threading
import time

from callpark.edge.sipping import build_request, options_ping, options_probe
from callpark.netutil import LOOPBACK
from callpark.sip.message import parse_datagram


def test_build_request_round_trips() -> None:
    raw = build_request(
        "MESSAGE",
        "sip:alice@127.0.0.1",
        local=(LOOPBACK, 5999),
        from_uri="sip:park@127.0.0.1",
        to_uri="sip:alice@127.0.0.1",
        call_id="c1",
        cseq=7,
        from_tag="t1",
        body=b"orbit 7001",
    )
    msg = parse_datagram(raw)
    assert msg.is_request and msg.method == "MESSAGE" and msg.request_uri == "sip:alice@127.0.0.1"
    assert msg.header("CSeq") == "7 MESSAGE" and msg.header("Content-Length") == "10"
    assert msg.body == "orbit 7001"


def test_options_ping_to_a_silent_port_times_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((LOOPBACK, 0))
        began = time.monotonic()
        assert options_ping(LOOPBACK, silent.getsockname()[1], timeout=0.2) is None
        assert time.monotonic() - began < 1.0


def test_options_probe_gets_the_reply() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind((LOOPBACK, 0))
        server.settimeout(2)

        def answer() -> None:
            data, peer = server.recvfrom(65535)
            req = parse_datagram(data)
            reply = (
                f"SIP/2.0 200 OK\r\nVia: {req.header('Via')}\r\nFrom: {req.header('From')}\r\n"
                f"To: {req.header('To')};tag=x\r\nCall-ID: {req.header('Call-ID')}\r\n"
                f"CSeq: {req.header('CSeq')}\r\nServer: test\r\nContent-Length: 0\r\n\r\n"
            )
            server.sendto(reply.encode(), peer)

        thread = threading.Thread(target=answer)
        thread.start()
        reply = options_probe(LOOPBACK, server.getsockname()[1], timeout=1.0)
        thread.join()
    assert reply is not None and reply.status_code == 200 and reply.header("Server") == "test"
