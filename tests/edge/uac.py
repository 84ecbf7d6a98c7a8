"""A minimal UDP SIP caller for edge tests: INVITE (then ACK and BYE), MESSAGE, through a proxy."""

from __future__ import annotations

import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any, TypedDict

from callpark.edge.sipping import build_request, new_branch, new_tag
from callpark.netutil import LOOPBACK
from callpark.sip.message import SipMessage, SipParseError, parse_datagram, tag_of


@dataclass
class CallResult:
    """What a caller saw: every response in order and the final one (None on timeout)."""

    responses: list[SipMessage] = field(default_factory=list)
    final: SipMessage | None = None
    elapsed: float = 0.0
    bye_status: int | None = None

    @property
    def status(self) -> int | None:
        return None if self.final is None else self.final.status_code

    @property
    def answered_by(self) -> str | None:
        return None if self.final is None else self.final.header("X-Answered-By")


class _Dialog(TypedDict):
    """What every request of one call (or one MESSAGE) shares."""

    to_uri: str
    call_id: str
    from_tag: str


class Uac:
    """Sends every request to ``proxy`` (the edge), like a phone with an outbound proxy."""

    def __init__(self, proxy: tuple[str, int], user: str = "caller", *, host: str = LOOPBACK) -> None:
        self.proxy = proxy
        self.user = user
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.local = (host, int(self.sock.getsockname()[1]))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Uac:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def from_uri(self) -> str:
        return f"sip:{self.user}@{self.local[0]}:{self.local[1]}"

    def _recv(self, call_id: str, deadline: float) -> SipMessage | None:
        """Next response (or request) for ``call_id`` before ``deadline``."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                return None
            try:
                msg = parse_datagram(data)
            except SipParseError:
                continue
            if msg.header("Call-ID") == call_id:
                return msg

    def _transaction(self, request: bytes, call_id: str, timeout: float, result: CallResult, cseq_method: str) -> None:
        """Send ``request`` (resent every 0.5 s until a provisional) and collect its responses."""
        began = time.monotonic()
        deadline = began + timeout
        self.sock.sendto(request, self.proxy)
        resend_at: float | None = began + 0.5
        while True:
            wait_until = min(deadline, resend_at) if resend_at is not None else deadline
            msg = self._recv(call_id, wait_until)
            now = time.monotonic()
            if msg is None:
                if now >= deadline:
                    return
                if resend_at is not None and now >= resend_at:
                    self.sock.sendto(request, self.proxy)
                    resend_at = now + 0.5
                continue
            if not msg.is_response or msg.cseq_method != cseq_method:
                continue
            result.responses.append(msg)
            if (msg.status_code or 0) < 200:
                resend_at = None
                continue
            result.final = msg
            result.elapsed = now - began
            return

    def _request(self, method: str, uri: str, dialog: _Dialog, *, cseq: int = 1, **fields: Any) -> bytes:
        """A request of ``dialog`` from this caller; ``fields`` go to :func:`build_request`."""
        return build_request(method, uri, local=self.local, from_uri=self.from_uri, cseq=cseq, **dialog, **fields)

    def invite(
        self, uri: str, *, timeout: float = 10.0, hang_up: bool = True, headers: list[tuple[str, str]] | None = None
    ) -> CallResult:
        """INVITE ``uri``; on 2xx send ACK and (with ``hang_up``) BYE along the route set.

        A non-2xx final response is ACKed hop by hop (same branch) as RFC 3261 requires.
        """
        dialog = _Dialog(to_uri=uri, call_id=secrets.token_hex(8) + "@edge-test", from_tag=new_tag())
        branch = new_branch()
        contact = f"<sip:{self.user}@{self.local[0]}:{self.local[1]}>"
        invite = self._request("INVITE", uri, dialog, branch=branch, headers=[("Contact", contact), *(headers or [])])
        result = CallResult()
        self._transaction(invite, dialog["call_id"], timeout, result, "INVITE")
        final = result.final
        if final is None:
            return result
        to_tag = tag_of(final.header("To"))
        if (final.status_code or 0) >= 300:
            self.sock.sendto(self._request("ACK", uri, dialog, to_tag=to_tag, branch=branch), self.proxy)
            return result
        remote_target = (final.header("Contact") or "").strip()
        remote_target = remote_target.split("<", 1)[-1].split(">", 1)[0]
        routes = [("Route", r) for r in reversed(final.header_values("Record-Route"))]
        self.sock.sendto(self._request("ACK", remote_target, dialog, to_tag=to_tag, headers=routes), self.proxy)
        if hang_up:
            bye = self._request("BYE", remote_target, dialog, cseq=2, to_tag=to_tag, headers=routes)
            bye_result = CallResult()
            self._transaction(bye, dialog["call_id"], timeout, bye_result, "BYE")
            result.bye_status = bye_result.status
        return result

    def register(
        self, registrar: str, *, call_id: str, cseq: int, headers: list[tuple[str, str]] | None = None
    ) -> CallResult:
        """REGISTER this caller's address for its user at ``registrar`` (a SIP URI); one transaction."""
        aor = f"sip:{self.user}@{registrar.removeprefix('sip:')}"
        dialog = _Dialog(to_uri=aor, call_id=call_id, from_tag=new_tag())
        contact = ("Contact", f"<{self.from_uri}>;expires=300")
        request = self._request("REGISTER", registrar, dialog, cseq=cseq, headers=[contact, *(headers or [])])
        result = CallResult()
        self._transaction(request, call_id, 5.0, result, "REGISTER")
        return result

    def request(
        self,
        method: str,
        uri: str,
        *,
        to_tag: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        timeout: float = 3.0,
    ) -> CallResult:
        """One request of a made-up dialog (``to_tag``: pretend it is in-dialog); its final response."""
        dialog = _Dialog(to_uri=uri, call_id=secrets.token_hex(8) + "@edge-test", from_tag=new_tag())
        contact = ("Contact", f"<{self.from_uri}>")
        request = self._request(method, uri, dialog, to_tag=to_tag, headers=[contact, *(headers or [])])
        result = CallResult()
        self._transaction(request, dialog["call_id"], timeout, result, method)
        return result

    def message(self, uri: str, text: str = "hello", *, timeout: float = 5.0) -> CallResult:
        """Send a MESSAGE to ``uri`` and wait for its final response."""
        dialog = _Dialog(to_uri=uri, call_id=secrets.token_hex(8) + "@edge-test", from_tag=new_tag())
        request = self._request("MESSAGE", uri, dialog, headers=[("Content-Type", "text/plain")], body=text.encode())
        result = CallResult()
        self._transaction(request, dialog["call_id"], timeout, result, "MESSAGE")
        return result
