"""A busy-lamp-field watcher over raw UDP: SUBSCRIBE to an orbit, collect RFC 4235 NOTIFYs.

What a desk phone's BLF key does, small enough to read: one ``SUBSCRIBE`` (``Event: dialog``)
through the edge, a thread answering every ``NOTIFY`` with 200 and recording the dialogs of its
``application/dialog-info+xml`` body. Used by the BLF tests and handy for a manual look::

    with BlfWatcher(("127.0.0.1", 5060), "sip:7001@127.0.0.1") as lamp:
        lamp.subscribe()
        lamp.wait_state("confirmed", timeout=10)
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from callpark.edge.sipping import build_request, new_branch, new_tag
from callpark.netutil import LOOPBACK
from callpark.sip.message import SipMessage, SipParseError, parse_datagram, tag_of
from callpark.waiting import wait_until

NS = "{urn:ietf:params:xml:ns:dialog-info}"


@dataclass(frozen=True)
class LampDialog:
    """One ``<dialog>`` of a NOTIFY: its id, state and the remote target a phone would dial."""

    id: str
    state: str
    remote_target: str | None
    remote_identity: str | None


@dataclass(frozen=True)
class Notify:
    """One NOTIFY as the watcher saw it (``at``: monotonic receive time)."""

    at: float
    subscription_state: str
    dialogs: tuple[LampDialog, ...]

    @property
    def state(self) -> str:
        """The lamp: ``confirmed`` when any dialog is, else the first dialog's state or ``none``."""
        states = [d.state for d in self.dialogs]
        if "confirmed" in states:
            return "confirmed"
        return states[0] if states else "none"


def parse_dialog_info(body: str) -> tuple[LampDialog, ...]:
    """The dialogs of a dialog-info document (empty for an empty body)."""
    if not body.strip():
        return ()
    root = ET.fromstring(body)
    out = []
    for dialog in root.iter(f"{NS}dialog"):
        target = dialog.find(f"{NS}remote/{NS}target")
        identity = dialog.find(f"{NS}remote/{NS}identity")
        out.append(
            LampDialog(
                id=dialog.get("id", ""),
                state=(dialog.findtext(f"{NS}state") or "").strip(),
                remote_target=None if target is None else target.get("uri"),
                remote_identity=None if identity is None else (identity.text or "").strip(),
            )
        )
    return tuple(out)


@dataclass
class _Subscription:
    call_id: str = field(default_factory=lambda: secrets.token_hex(8) + "@blf")
    from_tag: str = field(default_factory=new_tag)
    cseq: int = 0


class BlfWatcher:
    """Subscribes ``uri`` through ``proxy`` (the edge) and records every NOTIFY it gets."""

    def __init__(self, proxy: tuple[str, int], uri: str, *, user: str = "lamp", host: str = LOOPBACK) -> None:
        self.proxy = proxy
        self.uri = uri
        self.user = user
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.local = (host, int(self.sock.getsockname()[1]))
        self.notifies: list[Notify] = []
        self.responses: list[SipMessage] = []
        self._sub = _Subscription()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"blf-{user}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def __enter__(self) -> BlfWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def subscribe(self, *, expires: int = 600, event: str = "dialog", timeout: float = 5.0) -> SipMessage | None:
        """Send SUBSCRIBE (resent every 0.5 s) and return its final response (None on time-out)."""
        self._sub.cseq += 1
        request = build_request(
            "SUBSCRIBE",
            self.uri,
            local=self.local,
            from_uri=f"sip:{self.user}@{self.proxy[0]}",
            to_uri=self.uri,
            call_id=self._sub.call_id,
            cseq=self._sub.cseq,
            from_tag=self._sub.from_tag,
            branch=new_branch(),
            headers=[
                ("Contact", f"<sip:{self.user}@{self.local[0]}:{self.local[1]}>"),
                ("Event", event),
                ("Accept", "application/dialog-info+xml"),
                ("Expires", str(expires)),
            ],
        )
        seen = len(self.responses)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.sendto(request, self.proxy)
            until = min(deadline, time.monotonic() + 0.5)
            while time.monotonic() < until:
                with self._lock:
                    final = [r for r in self.responses[seen:] if (r.status_code or 0) >= 200]
                if final:
                    return final[0]
                time.sleep(0.02)
        return None

    def mark(self) -> int:
        """The number of NOTIFYs so far: pass as ``since`` to wait for newer ones."""
        with self._lock:
            return len(self.notifies)

    def since(self, index: int) -> list[Notify]:
        with self._lock:
            return list(self.notifies[index:])

    def wait_state(self, state: str, *, dialog_id: str | None = None, since: int = 0, timeout: float) -> Notify:
        """The first NOTIFY from index ``since`` on whose lamp is ``state`` (and that shows ``dialog_id``)."""

        def found() -> Notify | None:
            for n in self.since(since):
                if n.state == state and (dialog_id is None or any(d.id == dialog_id for d in n.dialogs)):
                    return n
            return None

        return wait_until(found, timeout=timeout, what=f"a NOTIFY with {state} for {self.uri}")

    # -- the receiving thread --------------------------------------------------------------------

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            try:
                msg = parse_datagram(data)
            except SipParseError:
                continue
            if msg.is_response:
                if msg.header("Call-ID") == self._sub.call_id:
                    with self._lock:
                        self.responses.append(msg)
                continue
            if msg.method == "NOTIFY":
                self._notified(msg, addr)

    def _notified(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        try:
            dialogs = parse_dialog_info(msg.body)
        except ET.ParseError:
            dialogs = ()
        notify = Notify(time.monotonic(), msg.header("Subscription-State") or "", dialogs)
        with self._lock:
            self.notifies.append(notify)
        self.sock.sendto(_ok(msg), addr)


def _ok(request: SipMessage) -> bytes:
    """``200 OK`` to ``request`` (its Via, From, To (tagged), Call-ID and CSeq)."""
    to = request.header("To") or ""
    if tag_of(to) is None:
        to += f";tag={new_tag()}"
    lines = ["SIP/2.0 200 OK"]
    lines += [f"Via: {v}" for v in request.header_values("Via")]
    lines += [f"From: {request.header('From')}", f"To: {to}", f"Call-ID: {request.header('Call-ID')}"]
    lines += [f"CSeq: {request.header('CSeq')}", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
