"""A tiny UDP SIP responder for tests: answers REGISTER 200 and other requests with a fixed code."""

from __future__ import annotations

import socket
import threading
from types import TracebackType

from callpark.netutil import LOOPBACK, free_port
from callpark.sip.message import SipParseError, parse_message


class FakeSipServer:
    """Records every request; REGISTER gets 200 (Contact echoed), others ``other_code``."""

    def __init__(self, other_code: int = 480) -> None:
        self.port = free_port(udp_too=True)
        self.other_code = other_code
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((LOOPBACK, self.port))
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-sip", daemon=True)

    @property
    def hostport(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def received(self, method: str) -> list[str]:
        with self._lock:
            return [r for r in self.requests if r.startswith(method + " ")]

    def __enter__(self) -> FakeSipServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            text = data.decode("utf-8", "replace")
            if not text.strip():
                continue  # keep-alive
            try:
                msg = parse_message(text)
            except SipParseError:
                continue
            if not msg.is_request:
                continue
            with self._lock:
                self.requests.append(text)
            if msg.method == "ACK":
                continue
            code, reason = (200, "OK") if msg.method == "REGISTER" else (self.other_code, "Unavailable")
            lines = [f"SIP/2.0 {code} {reason}"]
            lines += [f"Via: {v}" for v in msg.header_values("Via")]
            to = msg.header("To") or ""
            lines += [
                f"From: {msg.header('From')}",
                f"To: {to if ';tag=' in to else to + ';tag=fake1'}",
                f"Call-ID: {msg.header('Call-ID')}",
                f"CSeq: {msg.header('CSeq')}",
            ]
            if msg.method == "REGISTER" and msg.header("Contact"):
                expires = msg.header("Expires") or "300"
                contact = msg.header("Contact") or ""
                if "expires=" not in contact:
                    contact += f";expires={expires}"
                lines.append(f"Contact: {contact}")
            lines += ["Content-Length: 0", "", ""]
            self._sock.sendto("\r\n".join(lines).encode(), addr)
