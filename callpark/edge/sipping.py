"""A tiny pure-Python SIP-over-UDP helper: build requests, ping with OPTIONS.

Enough SIP for readiness probes and test clients; not a user agent (no retransmissions
beyond a simple resend, no dialog state). Received datagrams are parsed by the project's one
SIP parser, :func:`callpark.sip.message.parse_datagram`.
"""

from __future__ import annotations

import secrets
import socket
import time

from callpark.sip.message import SipMessage, SipParseError, parse_datagram

__all__ = [
    "SipMessage",
    "build_request",
    "new_branch",
    "new_tag",
    "options_ping",
    "options_probe",
]


def new_branch() -> str:
    """A fresh RFC 3261 Via branch (magic cookie prefix)."""
    return "z9hG4bK" + secrets.token_hex(8)


def new_tag() -> str:
    """A fresh From/To tag."""
    return secrets.token_hex(6)


def build_request(
    method: str,
    uri: str,
    *,
    local: tuple[str, int],
    from_uri: str,
    to_uri: str,
    call_id: str,
    cseq: int,
    from_tag: str,
    to_tag: str | None = None,
    branch: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    cseq_method: str | None = None,
) -> bytes:
    """Serialize a request whose Via and Contact name ``local`` (host, port) over UDP."""
    host, port = local
    to_value = f"<{to_uri}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};rport;branch={branch or new_branch()}",
        "Max-Forwards: 70",
        f"From: <{from_uri}>;tag={from_tag}",
        f"To: {to_value}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
    ]
    lines.extend(f"{name}: {value}" for name, value in headers or [])
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def options_ping(host: str, port: int, *, timeout: float = 0.5, source_host: str | None = None) -> int | None:
    """Send ``OPTIONS sip:<host>:<port>`` over UDP and return the final status code.

    Returns None when no final reply arrives within ``timeout`` seconds (or the port is
    closed). The request is resent once after half the timeout.
    """
    reply = options_probe(host, port, timeout=timeout, source_host=source_host)
    return None if reply is None else reply.status_code


def options_probe(host: str, port: int, *, timeout: float = 0.5, source_host: str | None = None) -> SipMessage | None:
    """Like :func:`options_ping` but returns the final response itself (None on timeout)."""
    src = source_host or host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((src, 0))
        local = (src, int(sock.getsockname()[1]))
        call_id = secrets.token_hex(8) + "@callpark-ping"
        branch = new_branch()
        request = build_request(
            "OPTIONS",
            f"sip:{host}:{port}",
            local=local,
            from_uri=f"sip:ping@{src}",
            to_uri=f"sip:{host}:{port}",
            call_id=call_id,
            cseq=1,
            from_tag=new_tag(),
            branch=branch,
            headers=[("Accept", "application/sdp")],
        )
        deadline = time.monotonic() + timeout
        resend_at = time.monotonic() + timeout / 2
        try:
            sock.sendto(request, (host, port))
        except OSError:
            return None
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None
            if resend_at and now >= resend_at:
                resend_at = 0.0
                try:
                    sock.sendto(request, (host, port))
                except OSError:
                    return None
            wait = (resend_at or deadline) - now
            sock.settimeout(max(0.001, wait))
            try:
                data = sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                # ICMP port unreachable surfaces as ConnectionRefusedError on a later recv
                return None
            try:
                msg = parse_datagram(data)
            except SipParseError:
                continue
            if msg.is_response and msg.header("Call-ID") == call_id and (msg.status_code or 0) >= 200:
                return msg
