"""The threaded HTTP(S) server under :class:`callpark.httpapi.NodeHttp`, bounded against slow clients.

A plain :class:`~http.server.ThreadingHTTPServer` gives every connection a thread for as long as
the client likes: a socket time-out closes a *silent* client, but one that trickles a byte every
few seconds keeps its thread for ever, and a few hundred of those exhaust the process. Here:

* at most ``limits.connections`` connections are served at once, and at most
  ``limits.per_source`` from one client address; a connection over either cap is closed at
  once without a thread (counted in :attr:`GuardedHTTPServer.refused`);
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
from collections import Counter
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


class GuardedHTTPServer(ThreadingHTTPServer):
    """A :class:`ThreadingHTTPServer` with connection caps, a request deadline and optional TLS."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog: connections over a cap are refused by us, not by the kernel

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
        """Connections closed at once because a cap was reached."""
        self.expired = 0
        """Connections shut down because they did not deliver their request in time."""
        self._lock = threading.Lock()
        self._sources: Counter[str] = Counter()
        self._deadlines: dict[int, tuple[float, socket.socket]] = {}  # thread id -> (deadline, dup)
        self._closed = threading.Event()
        super().__init__(address, handler)
        self._watchdog = threading.Thread(target=self._watch, name="http-deadlines", daemon=True)
        self._watchdog.start()

    @property
    def active(self) -> int:
        """Connections being served now."""
        with self._lock:
            return sum(self._sources.values())

    def process_request(self, request: Any, client_address: Any) -> None:
        """Admit the connection (caps) and hand it to a thread; over a cap, close it at once."""
        source = str(client_address[0])
        with self._lock:
            total = sum(self._sources.values())
            admitted = total < self.limits.connections and self._sources[source] < self.limits.per_source
            if admitted:
                self._sources[source] += 1
            else:
                self.refused += 1
        if not admitted:
            log.warning("http: connection from %s refused (%d open connections)", source, total)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(source)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection under the request deadline, after its TLS handshake."""
        source = str(client_address[0])
        me = threading.get_ident()
        watch = request.dup()  # shut down by the watchdog; stays valid whatever the handler closes
        with self._lock:
            self._deadlines[me] = (time.monotonic() + self.limits.request_deadline_s, watch)
        try:
            if self.tls is not None:
                request.settimeout(self.limits.request_deadline_s)
                try:
                    request = self.tls.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    log.info("http: TLS handshake with %s failed: %s", source, exc.__class__.__name__)
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            self.request_parsed()
            watch.close()
            self._release(source)

    def request_parsed(self) -> None:
        """The calling connection delivered its request: the deadline no longer applies."""
        with self._lock:
            self._deadlines.pop(threading.get_ident(), None)

    def _release(self, source: str) -> None:
        with self._lock:
            self._sources[source] -= 1
            if self._sources[source] <= 0:
                del self._sources[source]

    def _watch(self) -> None:
        """Shut down connections past their request deadline (checked 4 times a second)."""
        while not self._closed.wait(0.25):
            now = time.monotonic()
            with self._lock:
                late = [(tid, w) for tid, (deadline, w) in self._deadlines.items() if deadline <= now]
                for tid, _ in late:
                    del self._deadlines[tid]
                self.expired += len(late)
            for _, sock in late:
                log.info("http: closing a connection that did not send its request in time")
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (or was cut at its deadline) is no error worth a traceback."""
        log.debug("http: connection with %s ended early", client_address[0], exc_info=True)

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()
