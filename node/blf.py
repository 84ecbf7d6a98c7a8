"""Busy lamp field: the node PUBLISHes RFC 4235 dialog-info for every orbit it holds.

Phones SUBSCRIBE to an orbit (``sip:7001@<domain>``, ``Event: dialog``) at the edge, whose
Kamailio ``presence`` + ``presence_dialoginfo`` modules keep the subscriptions and send the
NOTIFYs (docs/ARCHITECTURE.md, "Busy lamp field"). The node only publishes what it holds:

* held (parked, ringing back, being retrieved, being taken over) -> ``confirmed``, refreshed
  every half ``expires`` with ``SIP-If-Match`` (a 412, e.g. after an edge restart, republishes);
* gone from this node because the call ended (freed, or a free still owed to etcd) ->
  ``terminated`` with the same dialog id (the park id), published for one ``expires`` and not
  refreshed;
* gone because another node holds it now (drain, rejoin after a fence) -> no longer
  refreshed; the new holder publishes its own.

The dialog id is the park id, which survives takeovers. Kamailio's presence module deletes
an existing publication of the same dialog id when a new one arrives, so the new holder's
first PUBLISH replaces a dead (or drained) holder's; and presence_dialoginfo runs with
``force_single_dialog``, where a ``terminated`` dialog beats a ``confirmed`` one of the same id.
Either way a dead holder's stale ``confirmed`` never outlives the new holder's state, and
unrefreshed it expires within ``expires`` seconds.

One thread per node polls the held calls every ``TICK_S`` and sends PUBLISH over UDP to the
edge from its own socket (a short transaction: resent at 0.5, 1, 2 s, then failed and tried
again later). It reads :attr:`HeldCalls.held` and ``pending_free`` under ``HeldCalls.lock``,
briefly, and etcd (one read) only to tell an ended call from a moved one.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

from prometheus_client import Counter

from callpark.edge.sipping import build_request, new_tag
from callpark.errors import StoreError
from callpark.node.calls import HeldCalls
from callpark.node.context import NodeContext, NodePart
from callpark.sip.message import SipMessage, SipParseError, parse_datagram, parse_sip_uri

log = logging.getLogger(__name__)

TICK_S = 0.2
RESENDS_S = (0.5, 1.0, 2.0)  # waits before each resend, then the PUBLISH has failed
RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)  # after failures in a row
CONFIRMED = "confirmed"
TERMINATED = "terminated"
CONTENT_TYPE = "application/dialog-info+xml"

TERMINATED_LINGER_S = 1.0  # an ended call's "terminated" stays this long, then is removed


def orbit_uri(orbit: str, domain: str) -> str:
    """``sip:<orbit>@<domain>``: ``*`` stays, ``#`` is escaped (as the edge normalises it)."""
    return f"sip:{quote(orbit, safe='*')}@{domain}"


def dialog_info(entity: str, park_id: str, state: str, caller: str = "") -> bytes:
    """An RFC 4235 dialog-info document with one dialog (``id`` = the park id).

    Local and remote identity and target are the orbit URI, so a phone that acts on the
    lamp dials the orbit, which retrieves. No Call-ID or tags: a phone that picks up with
    INVITE/Replaces would replace (and so hang up) the parked caller's dialog with the node.
    """
    display = f" display={quoteattr(_user_of(caller))}" if caller else ""
    ent = quoteattr(entity)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" entity={ent}>\n'
        f'  <dialog id={quoteattr(park_id)} direction="recipient">\n'
        f"    <state>{escape(state)}</state>\n"
        f"    <local><identity>{escape(entity)}</identity><target uri={ent}/></local>\n"
        f"    <remote><identity{display}>{escape(entity)}</identity><target uri={ent}/></remote>\n"
        "  </dialog>\n"
        "</dialog-info>\n"
    ).encode()


def _user_of(uri: str) -> str:
    try:
        return parse_sip_uri(uri).user or uri
    except ValueError:
        return uri


@dataclass
class Publication:
    """What we last published for one orbit, and when to send again."""

    park_id: str
    state: str
    caller: str
    etag: str | None = None
    expires_at: float = 0.0  # monotonic: when the edge drops it unless refreshed
    next_at: float = 0.0  # monotonic: when to send (refresh or retry)
    failures: int = 0
    sent: bool = False  # the edge has this state (False: send it)


class Lamps(NodePart):
    """Keeps the edge's dialog state of every orbit this node holds (see the module docstring)."""

    def __init__(self, ctx: NodeContext, calls: HeldCalls) -> None:
        super().__init__(ctx)
        self.calls = calls
        self.expires = ctx.config.blf_expires_s
        self.edge = _edge_address(ctx.config.edge)
        self.enabled = self.edge is not None and self.expires > 0
        self.pubs: dict[str, Publication] = {}
        self.publishes = Counter(
            "callpark_blf_publishes_total",
            "BLF dialog-info PUBLISHes to the edge by result (sent: 2xx, failed: error or no answer)",
            ["pool", "result"],
            registry=ctx.metrics.registry,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((self.config.host, 0))
        self._thread = threading.Thread(target=self._run, name="blf", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Publish what ended while stopping (one last pass), then close."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=10.0)
        self._thread = None
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            self._pass()
        self._pass()

    def _pass(self) -> None:
        try:
            self.sync(time.monotonic())
        except Exception:
            log.exception("BLF pass failed; please report it as a BUG")

    # -- reconciling ----------------------------------------------------------------------------

    def sync(self, now: float) -> None:
        """One pass: publish new, ended and moved calls, refresh what is due."""
        with self.calls.lock:
            held = {o: (h.call.park_id, h.call.caller_uri) for o, h in self.calls.held.items()}
            ended = {o: entry[0] for o, entry in self.calls.pending_free.items()}
        for orbit, (park_id, caller) in held.items():
            if ended.get(orbit) == park_id:
                continue
            pub = self.pubs.get(orbit)
            if pub is not None and pub.park_id != park_id:
                self._unpublish(orbit, pub)  # another call's dialog: a new publication, not a modify
                pub = None
            if pub is None or pub.state != CONFIRMED:
                etag = pub.etag if pub is not None else None
                self.pubs[orbit] = Publication(park_id, CONFIRMED, caller, etag=etag)
        for orbit, pub in list(self.pubs.items()):
            if pub.state == CONFIRMED and (orbit not in held or ended.get(orbit) == pub.park_id):
                if not self._gone(orbit, pub, ended):
                    continue
            elif pub.state == TERMINATED and pub.sent:
                if now >= pub.next_at:  # subscribers saw "terminated": remove it (see _unpublish)
                    self._unpublish(orbit, pub)
                    del self.pubs[orbit]
                continue
            if now >= pub.next_at and not self._send(orbit, pub, now):
                break  # the edge did not answer: the rest waits for the next pass

    def _gone(self, orbit: str, pub: Publication, ended: dict[str, str]) -> bool:
        """A confirmed orbit we no longer hold: terminated (ended) or withdrawn (moved).

        Returns False when the publication was dropped or etcd could not tell yet.
        """
        if ended.get(orbit) != pub.park_id:
            try:
                current = self.table.get(orbit)
            except StoreError:
                return False  # ask again next pass
            if current is not None and current.call.park_id == pub.park_id:
                if not self.me.holds(current.call.holder):
                    self._withdraw(orbit, pub)
                    return False
                if orbit not in self.calls.held:
                    return False  # ours in etcd but not held (a restart's recovery is pending)
        pub.state, pub.sent, pub.next_at, pub.failures = TERMINATED, False, 0.0, 0
        return True

    def _withdraw(self, orbit: str, pub: Publication) -> None:
        """Another node holds the call now: stop refreshing. Not removed at the edge (the lamp
        would flicker off): the new holder's PUBLISH of the same dialog id replaces ours, and
        unrefreshed it expires."""
        del self.pubs[orbit]

    def _send(self, orbit: str, pub: Publication, now: float) -> bool:
        """Publish ``pub``'s state (or refresh it); False when the edge did not answer at all."""
        refresh = pub.sent and pub.etag is not None and pub.state == CONFIRMED
        body = b"" if refresh else dialog_info(self._uri(orbit), pub.park_id, pub.state, pub.caller)
        status = self._transaction(orbit, pub, expires=self.expires, body=body)
        if status == 412:  # the edge lost our publication (restart): publish it anew
            pub.etag = None
            body = dialog_info(self._uri(orbit), pub.park_id, pub.state, pub.caller)
            status = self._transaction(orbit, pub, expires=self.expires, body=body)
        if status is not None and 200 <= status < 300:
            pub.sent, pub.failures = True, 0
            pub.expires_at = now + self.expires
            pub.next_at = now + (self.expires / 2 if pub.state == CONFIRMED else TERMINATED_LINGER_S)
            return True
        pub.next_at = now + RETRY_S[min(pub.failures, len(RETRY_S) - 1)]
        pub.failures += 1
        if pub.failures == 1:
            log.warning("BLF PUBLISH %s of orbit %s failed: %s", pub.state, orbit, status or "no answer")
        return status is not None

    def _unpublish(self, orbit: str, pub: Publication) -> None:
        """Remove our ended publication (Expires: 0). Left in place it would compete for the
        orbit's lamp with the next call parked there by another node (the edge shows one
        dialog per orbit); if this PUBLISH is lost, the publication expires by itself."""
        if pub.etag is not None:
            self._transaction(orbit, pub, expires=0, body=b"")

    def _uri(self, orbit: str) -> str:
        return orbit_uri(orbit, self.config.domain)

    # -- one PUBLISH transaction over UDP ---------------------------------------------------------

    def _transaction(self, orbit: str, pub: Publication, *, expires: int, body: bytes) -> int | None:
        """Send one PUBLISH and wait for its final answer; the status, or None on time-out."""
        assert self._sock is not None and self.edge is not None
        uri = self._uri(orbit)
        local = (self.config.host, int(self._sock.getsockname()[1]))
        call_id = secrets.token_hex(10)
        headers = [("Event", "dialog"), ("Expires", str(expires))]
        if pub.etag is not None:
            headers.append(("SIP-If-Match", pub.etag))
        if body:
            headers.append(("Content-Type", CONTENT_TYPE))
        request = build_request(
            "PUBLISH",
            uri,
            local=local,
            from_uri=f"sip:park@{self.config.domain}",
            to_uri=uri,
            call_id=call_id,
            cseq=1,
            from_tag=new_tag(),
            headers=headers,
            body=body,
        )
        reply = self._exchange(request, call_id)
        status = None if reply is None else reply.status_code
        ok = status is not None and 200 <= status < 300
        self.publishes.labels(self.config.pool, "sent" if ok else "failed").inc()
        if ok and reply is not None and expires > 0:
            pub.etag = reply.header("SIP-ETag") or pub.etag
        return status

    def _exchange(self, request: bytes, call_id: str) -> SipMessage | None:
        assert self._sock is not None and self.edge is not None
        for wait in RESENDS_S:
            self._sock.sendto(request, self.edge)
            deadline = time.monotonic() + wait
            while (remaining := deadline - time.monotonic()) > 0:
                self._sock.settimeout(remaining)
                try:
                    data = self._sock.recv(65535)
                except (TimeoutError, OSError):
                    break
                try:
                    msg = parse_datagram(data)
                except SipParseError:
                    continue
                if msg.is_response and msg.header("Call-ID") == call_id and (msg.status_code or 0) >= 200:
                    return msg
        return None


def _edge_address(edge: str | None) -> tuple[str, int] | None:
    if not edge:
        return None
    host, _, port = edge.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else (edge, 5060)
