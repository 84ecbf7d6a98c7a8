"""The HTTP side of nodes and controllers: /metrics, /healthz, /readyz, a JSON API, admin writes.

Reads are open, except ``private`` API paths (data that names people: callers, parkers, park
ids): those need the admin token like writes, and without a configured token they answer 403
(nothing personal is served to anyone). Writes (``actions``) exist only with an admin token:
without one every POST/PUT/DELETE is 405 (read-only API); with one, a write needs
``Authorization: Bearer`` (401 with ``WWW-Authenticate`` when missing, 403 when wrong, checked in
constant time by :mod:`callpark.admintoken`) before it is even routed. The token is never logged
or echoed.

Every connection has a socket time-out (:data:`SOCKET_TIMEOUT_S`): a client that opens a
connection and sends nothing (or stops half-way) is disconnected, so idle connections cannot
pile up threads for ever. :class:`callpark.httpserver.GuardedHTTPServer` also caps connections
(in total and per client address) and gives each a deadline for its whole request, so clients
trickling bytes cannot either; with ``tls`` (a server context) the API is HTTPS only.
pile up threads for ever.

Every refusal for want of the token is counted in ``callpark_http_refused_total{kind, code}``
(``kind``: ``private read`` or ``admin write``).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from callpark.admintoken import REALM, AdminToken
from callpark.errors import CallparkError, StoreError
from callpark.httpserver import ConnectionLimits, GuardedHTTPServer, GuardedRequestHandler

log = logging.getLogger(__name__)

# An admin write: query parameters in, (HTTP status, JSON body) out.
Action = Callable[[dict[str, str]], tuple[int, dict[str, Any]]]
TEXT = "text/plain; charset=utf-8"
SOCKET_TIMEOUT_S = 10.0
"""Seconds a connection may stay silent (before or within a request) before it is closed."""


def _refused_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "callpark_http_refused_total",
        "HTTP requests refused for want of the admin token, by kind (private read, admin write) and status",
        ["kind", "code"],
        registry=registry,
    )


class NodeHttp:
    """Serves the endpoints on ``host:port`` (port 0: pick a free one)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry,
        healthy: Callable[[], tuple[bool, str]],
        ready: Callable[[], tuple[bool, str]],
        api: dict[str, Callable[[], Any]],
        admin_token: AdminToken | None = None,
        actions: Mapping[tuple[str, str], Action] | None = None,
        private: frozenset[str] = frozenset(),
        timeout_s: float = SOCKET_TIMEOUT_S,
        tls: ssl.SSLContext | None = None,
        limits: ConnectionLimits | None = None,
    ) -> None:
        outer = self

        class Handler(GuardedRequestHandler):
            timeout = timeout_s  # StreamRequestHandler applies it to the connection's socket

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http: " + format, *args)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path in ("/healthz", "/readyz"):
                    ok, why = (healthy if path == "/healthz" else ready)()
                    self._send(200 if ok else 503, (why + "\n").encode(), TEXT)
                elif path in outer.private and not outer._reader_allowed(self, path):
                    return
                elif path in outer.api:
                    body = json.dumps(outer.api[path](), indent=2, sort_keys=True, default=str).encode()
                    self._send(200, body, "application/json")
                else:
                    self._send(404, b"not found\n", TEXT)

            def do_POST(self) -> None:
                outer._write(self, self.command)

            do_PUT = do_DELETE = do_PATCH = do_POST

            def _send(self, code: int, body: bytes, ctype: str, headers: Mapping[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.refused = _refused_counter(registry)
        self.api = api
        self.private = private
        self.admin_token = admin_token
        self.actions = dict(actions or {})
        self.server = GuardedHTTPServer((host, port), Handler, limits=limits, tls=tls)
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    def _authenticated(self, handler: Any, token: AdminToken, kind: str, who: str) -> bool:
        """Check the bearer token of a request; a refusal (401 or 403) is answered and logged."""
        verdict = token.check(handler.headers.get("Authorization"))
        if verdict in (401, 403):
            self.refused.labels(kind, str(verdict)).inc()
        if verdict == 401:
            log.warning("%s refused (no bearer token): %s", kind, who)
            challenge = {"WWW-Authenticate": f'Bearer realm="{REALM}"'}
            handler._send(401, b"admin token required: send Authorization: Bearer <token>\n", TEXT, challenge)
            return False
        if verdict == 403:
            log.warning("%s refused (wrong token): %s", kind, who)
            handler._send(403, b"admin token rejected\n", TEXT)
            return False
        return True

    def _reader_allowed(self, handler: Any, path: str) -> bool:
        """A private read: only with the admin token; none configured means none is served."""
        who = f"{handler.client_address[0]} GET {path!r}"
        if self.admin_token is None:
            log.info("private read refused (no admin token is configured): %s", who)
            self.refused.labels("private read", "403").inc()
            handler._send(403, f"{path} names callers and parkers: it needs an admin token\n".encode(), TEXT)
            return False
        return self._authenticated(handler, self.admin_token, "private read", who)

    def _write(self, handler: Any, method: str) -> None:
        """Authenticate, then route an admin write; every refusal is one line."""
        path, _, query = handler.path.partition("?")
        who = f"{handler.client_address[0]} {method} {path[:80]!r}"
        if self.admin_token is None:
            self.refused.labels("admin write", "405").inc()
            handler._send(405, b"read-only API: no admin token is configured\n", TEXT, {"Allow": "GET"})
            return
        if not self._authenticated(handler, self.admin_token, "admin write", who):
            return
        action = self.actions.get((method, path))
        if action is None:
            known = sorted(m for m, p in self.actions if p == path)
            if known:
                handler._send(405, f"{path} allows {', '.join(known)}\n".encode(), TEXT, {"Allow": ", ".join(known)})
            else:
                handler._send(404, b"no such admin operation\n", TEXT)
            return
        try:
            params = dict(parse_qsl(query, keep_blank_values=True, max_num_fields=16))
            code, body = action(params)
        except ValueError:
            code, body = 400, {"error": "malformed query string"}
        except StoreError as exc:
            code, body = 503, {"error": f"etcd unavailable: {exc}"}
        except CallparkError as exc:
            code, body = 400, {"error": str(exc)}
        log.info("admin write %s: %d", who, code)
        handler._send(code, (json.dumps(body, sort_keys=True) + "\n").encode(), "application/json")

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def scheme(self) -> str:
        """``https`` when serving TLS, else ``http``."""
        return "https" if self.server.tls is not None else "http"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving; safe when :meth:`start` never ran (``shutdown`` would wait for ever)."""
        if self._thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
