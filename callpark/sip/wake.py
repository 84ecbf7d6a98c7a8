"""Wake a pjsua2 process out of a long ``libHandleEvents`` pump (pjsua2-free)."""

from __future__ import annotations

import contextlib
import socket

WAKE_PAYLOAD = b"\r\n\r\n"


def wake(sip_port: int, host: str = "127.0.0.1") -> None:
    """Send a SIP keep-alive (CRLFCRLF) to a UDP SIP port.

    pjsip treats it as a keep-alive and drops it, but the pump returns at once, so a
    command queued by another thread runs without waiting for the pump timeout.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
        sock.sendto(WAKE_PAYLOAD, (host, sip_port))
