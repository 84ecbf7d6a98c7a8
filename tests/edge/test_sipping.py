"""The tiny SIP helper: message parsing and the OPTIONS ping."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from callpark.edge.sipping import build_request, options_ping, options_probe, parse_message
from callpark.netutil import LOOPBACK


def test_parse_response_with_compact_and_folded_headers() -> None:
    data = (
        b"SIP/2.0 302 Moved Temporarily\r\n"
        b"v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
        b"i: abc@x\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"m: <sip:7001@127.0.0.1:5071>\r\n"
        b"X-Long: one\r\n two\r\n"
        b"Record-Route: <sip:a;lr>\r\nRecord-Route: <sip:b;lr>\r\n"
        b"Content-Length: 2\r\n\r\nhi"
    )
    msg = parse_message(data)
    assert msg.is_response and msg.status == 302 and msg.reason == "Moved Temporarily"
    assert msg.method == "INVITE"
    assert msg.header("Call-ID") == "abc@x"
    assert msg.header("contact") == "<sip:7001@127.0.0.1:5071>"
    assert msg.header("X-Long") == "one two"
    assert msg.header_all("Record-Route") == ["<sip:a;lr>", "<sip:b;lr>"]
    assert msg.body == b"hi"


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
    msg = parse_message(raw)
    assert not msg.is_response and msg.method == "MESSAGE" and msg.request_uri == "sip:alice@127.0.0.1"
    assert msg.header("CSeq") == "7 MESSAGE" and msg.header("Content-Length") == "10"
    assert msg.body == b"orbit 7001"


def test_parse_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_message(b"\r\n\r\n")
    with pytest.raises(ValueError):
        parse_message(b"HTTP/1.1 200 OK\r\n\r\n")


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
            req = parse_message(data)
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
    assert reply is not None and reply.status == 200 and reply.header("Server") == "test"
