"""A tiny pure-Python SIP-over-UDP helper: build requests, parse messages, ping with OPTIONS.

Enough SIP for readiness probes and test clients; not a user agent (no retransmissions
beyond a simple resend, no dialog state).
"""

from __future__ import annotations

import secrets
import socket
import time
from dataclasses import dataclass, field

__all__ = [
    "SipMessage",
    "build_request",
    "new_branch",
    "new_tag",
    "options_ping",
    "options_probe",
    "parse_message",
]

_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length"}


def new_branch() -> str:
    """A fresh RFC 3261 Via branch (magic cookie prefix)."""
    return "z9hG4bK" + secrets.token_hex(8)


def new_tag() -> str:
    """A fresh From/To tag."""
    return secrets.token_hex(6)


@dataclass
class SipMessage:
    """A parsed SIP request or response; header names are kept as received."""

    start_line: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_response(self) -> bool:
        return self.start_line.startswith("SIP/2.0 ")

    @property
    def status(self) -> int:
        """The status code of a response (0 for a request)."""
        if not self.is_response:
            return 0
        return int(self.start_line.split(" ", 2)[1])

    @property
    def reason(self) -> str:
        parts = self.start_line.split(" ", 2)
        return parts[2] if self.is_response and len(parts) > 2 else ""

    @property
    def method(self) -> str:
        """The method of a request, or the CSeq method of a response."""
        if self.is_response:
            cseq = self.header("CSeq") or ""
            return cseq.split()[-1] if cseq else ""
        return self.start_line.split(" ", 1)[0]

    @property
    def request_uri(self) -> str:
        return "" if self.is_response else self.start_line.split(" ")[1]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive, compact forms understood)."""
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        """All values of header ``name``, in order (comma-joined lines are not split)."""
        wanted = _COMPACT.get(name.lower(), name.lower())
        return [v for k, v in self.headers if _COMPACT.get(k.lower(), k.lower()) == wanted]


def parse_message(data: bytes) -> SipMessage:
    """Parse one SIP message from a UDP datagram.

    :raises ValueError: if the datagram is not a SIP message.
    """
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", errors="replace").split("\r\n")
    if not lines or not lines[0] or (" SIP/2.0" not in lines[0] and not lines[0].startswith("SIP/2.0 ")):
        raise ValueError(f"not a SIP message: {lines[0][:80] if lines else ''!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return SipMessage(start_line=lines[0], headers=headers, body=body)


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
    return None if reply is None else reply.status


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
                msg = parse_message(data)
            except ValueError:
                continue
            if msg.is_response and msg.header("Call-ID") == call_id and msg.status >= 200:
                return msg
