"""The threaded HTTP(S) server under :class:`callpark.httpapi.NodeHttp`, bounded against slow clients.

A plain :class:`~http.server.ThreadingHTTPServer` gives every connection a thread for as long as
the client likes: a socket time-out closes a *silent* client, but one that trickles a byte every
few seconds keeps its thread for ever, and a few hundred of those exhaust the process. Here:

* at most ``limits.connections`` connections are served at once, and at most
  ``limits.per_source`` from one client address; a new connection over either cap cuts the
  oldest one (of that source, for the per-source cap) that has not delivered its request yet
  (:attr:`GuardedHTTPServer.evicted`), or is closed at once without a thread when every slot
  is busy with a complete request (:attr:`GuardedHTTPServer.refused`);
* a connection has ``limits.request_deadline_s`` to deliver its whole request (TLS handshake,
  request line, headers); then the socket is shut down however busy the client keeps it;
* with ``tls`` the listening socket stays plain and each connection's handshake runs in its
  own thread under the same deadline, so a client that never finishes a handshake cannot
  stall the accept loop.

HTTP/1.0 (one request per connection) is kept, so a parsed request releases its deadline and a
finished response releases its slot.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from callpark import certs
from callpark.errors import CallparkError

__all__ = [
    "ConnectionLimits",
    "GuardedHTTPServer",
    "GuardedRequestHandler",
    "HttpsError",
    "add_https_options",
    "client_context",
    "https_from_args",
    "server_context",
]

log = logging.getLogger(__name__)


class HttpsError(CallparkError):
    """A certificate, key or CA file for HTTPS cannot be used (one line naming it)."""


@dataclass(frozen=True)
class ConnectionLimits:
    """How many connections are served at once and how long one may take to send its request."""

    connections: int = 64
    per_source: int = 16
    request_deadline_s: float = 10.0

    def validate(self) -> ConnectionLimits:
        if not 1 <= self.per_source <= self.connections <= 4096:
            raise CallparkError("HTTP connection limits: need 1 <= per_source <= connections <= 4096")
        if not 0.1 <= self.request_deadline_s <= 300:
            raise CallparkError("HTTP request deadline must be 0.1 to 300 seconds")
        return self


def _cut(sock: socket.socket) -> None:
    """Shut a connection down (its thread sees EOF or an error and ends)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def server_context(cert: Path | str, key: Path | str) -> ssl.SSLContext:
    """A TLS 1.2+ server context with ``cert`` (PEM chain) and ``key``.

    :raises HttpsError: one line naming the file that cannot be used.
    """
    for what, path in (("certificate", cert), ("key", key)):
        if not Path(path).is_file():
            raise HttpsError(f"HTTPS {what} {path}: no such file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise HttpsError(f"HTTPS certificate {cert} with key {key}: unusable ({exc.__class__.__name__})") from None
    return context


def client_context(ca: Path | str | None) -> ssl.SSLContext:
    """A verifying client context: ``ca`` (PEM) as the only trust anchor, else the system's."""
    if ca is not None and not Path(ca).is_file():
        raise HttpsError(f"HTTPS CA file {ca}: no such file")
    try:
        return ssl.create_default_context(cafile=None if ca is None else str(ca))
    except (ssl.SSLError, OSError):
        raise HttpsError(f"HTTPS CA file {ca}: not a PEM certificate") from None


CERT_ENV = "CALLPARK_HTTP_CERT"
KEY_ENV = "CALLPARK_HTTP_KEY"


def add_https_options(p: argparse.ArgumentParser) -> None:
    """``--http-cert``/``--http-key`` (or ``$CALLPARK_HTTP_CERT``/``$CALLPARK_HTTP_KEY``): serve HTTPS."""
    p.add_argument("--http-cert", help=f"PEM certificate (chain) for HTTPS (or ${CERT_ENV}); without it: plain HTTP")
    p.add_argument("--http-key", help=f"PEM private key of --http-cert (or ${KEY_ENV})")


def https_from_args(args: argparse.Namespace, *, warn_days: int = certs.EXPIRY_WARNING_DAYS) -> ssl.SSLContext | None:
    """The server context from :func:`add_https_options`' options (None: plain HTTP).

    A certificate that expires within ``warn_days`` is logged as one WARNING line.
    :raises HttpsError: one of the two given alone, or an unusable file.
    """
    cert = args.http_cert or os.environ.get(CERT_ENV)
    key = args.http_key or os.environ.get(KEY_ENV)
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise HttpsError("--http-cert and --http-key go together")
    context = server_context(cert, key)
    try:
        warning = certs.expiry_warning(cert, "HTTPS", days=warn_days)
    except certs.CertError as exc:
        raise HttpsError(str(exc)) from None
    if warning:
        log.warning("%s", warning)
    return context


class GuardedRequestHandler(BaseHTTPRequestHandler):
    """A request handler that tells its :class:`GuardedHTTPServer` once the request is in."""

    def parse_request(self) -> bool:
        parsed = super().parse_request()  # reads the headers
        server = self.server
        if isinstance(server, GuardedHTTPServer):
            server.request_parsed()  # the request is in: its deadline no longer applies
        return parsed


@dataclass
class _Conn:
    """One admitted connection: its request deadline, a dup of its socket to cut it, its source."""

    deadline: float
    watch: socket.socket
    source: str
    parsed: bool = False  # its request is in: no deadline, not evictable
    cut: bool = False  # shut down by the server (deadline or eviction)


class GuardedHTTPServer(ThreadingHTTPServer):
    """A :class:`ThreadingHTTPServer` with connection caps, a request deadline and optional TLS.

    Over a cap, the oldest connection that has not delivered its request yet (of the same source
    for the per-source cap) is cut to make room: a trickling client loses its slot to the next
    request instead of keeping it. Only when every slot is busy with a parsed request is the
    new connection refused.
    """

    daemon_threads = True
    request_queue_size = 128  # listen backlog: connections over a cap are handled by us, not the kernel

    def __init__(
        self,
        address: tuple[str, int],
        handler: Any,
        *,
        limits: ConnectionLimits | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.limits = (limits or ConnectionLimits()).validate()
        self.tls = tls
        self.refused = 0
        """Connections closed at once: every slot was busy with a parsed request."""
        self.evicted = 0
        """Connections cut to make room for a new one (oldest without a complete request first)."""
        self.expired = 0
        """Connections cut because they did not deliver their request in time."""
        self._lock = threading.Lock()
        self._conns: dict[int, _Conn] = {}  # id(request socket) -> connection, oldest first
        self._local = threading.local()
        self._closed = threading.Event()
        super().__init__(address, handler)
        self._watchdog = threading.Thread(target=self._watch, name="http-deadlines", daemon=True)
        self._watchdog.start()

    @property
    def active(self) -> int:
        """Connections being served now (not counting those already cut)."""
        with self._lock:
            return sum(1 for c in self._conns.values() if not c.cut)

    def _make_room(self, source: str) -> tuple[bool, _Conn | None]:
        """(admitted, connection to cut) for a new connection from ``source``; holds the lock."""
        live = [c for c in self._conns.values() if not c.cut]
        over_source = sum(1 for c in live if c.source == source) >= self.limits.per_source
        if not over_source and len(live) < self.limits.connections:
            return True, None
        victim = next((c for c in live if not c.parsed and (not over_source or c.source == source)), None)
        if victim is None:
            return False, None
        victim.cut = True
        return True, victim

    def process_request(self, request: Any, client_address: Any) -> None:
        """Admit the connection (caps, cutting an incomplete one if need be) and hand it to a thread."""
        source = str(client_address[0])
        with self._lock:
            admitted, victim = self._make_room(source)
            if not admitted:
                self.refused += 1
            else:
                self.evicted += victim is not None
                self._conns[id(request)] = _Conn(
                    time.monotonic() + self.limits.request_deadline_s, request.dup(), source
                )
        if victim is not None:
            log.info("http: cut an incomplete connection from %s to admit one from %s", victim.source, source)
            _cut(victim.watch)
        if not admitted:
            log.warning("http: connection from %s refused (every slot is busy)", source)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(id(request))
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection under the request deadline, after its TLS handshake."""
        self._local.key = id(request)
        try:
            if self.tls is not None:
                request.settimeout(self.limits.request_deadline_s)
                try:
                    request = self.tls.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    log.info("http: TLS handshake with %s failed: %s", client_address[0], exc.__class__.__name__)
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            self._forget(self._local.key)

    def request_parsed(self) -> None:
        """The calling connection delivered its request: no deadline, no eviction any more."""
        with self._lock:
            conn = self._conns.get(getattr(self._local, "key", -1))
            if conn is not None:
                conn.parsed = True

    def _forget(self, key: int) -> None:
        with self._lock:
            conn = self._conns.pop(key, None)
        if conn is not None:
            conn.watch.close()

    def _watch(self) -> None:
        """Cut connections past their request deadline (checked 4 times a second)."""
        while not self._closed.wait(0.25):
            now = time.monotonic()
            with self._lock:
                late = [c for c in self._conns.values() if not c.parsed and not c.cut and c.deadline <= now]
                for conn in late:
                    conn.cut = True
                self.expired += len(late)
            for conn in late:
                log.info("http: cut a connection from %s that did not send its request in time", conn.source)
                _cut(conn.watch)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (or was cut at its deadline) is no error worth a traceback."""
        log.debug("http: connection with %s ended early", client_address[0], exc_info=True)

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()
