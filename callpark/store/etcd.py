"""The etcd store: the only module that imports the etcd client.

It implements the :class:`~callpark.store.kv.KV` contract over gRPC, translates client errors into
:mod:`callpark.errors`, and retries transient failures with tenacity (bounded,
exponential back-off with jitter, an overall deadline).

Decisions, and why:

* **Message limits are set, not inherited.** gRPC's defaults (4 MiB received, no send
  limit) made a prefix of ~6,000 parked calls, or music over 4 MiB, unreadable. The
  send limit is :data:`MAX_SEND_BYTES`, etcd's own bound on a request, so an oversized
  request fails here as a plain :class:`~callpark.errors.StoreError` before it costs a
  round trip. The receive limit :data:`MAX_RECEIVE_BYTES` bounds one response, and no
  response holds a whole prefix: see the next point.
* **Prefix reads are paged, on one revision.** ``get_prefix`` asks for at most
  :data:`RANGE_PAGE_KEYS` keys a request and continues after the last key it got
  (that key plus one zero byte), reading every later page at the first page's
  revision, so the result is one consistent snapshot however many pages it took. A
  page whose values overflow the receive limit is asked again with fewer keys (a
  single value fits: etcd refuses larger writes). If etcd compacts that revision
  mid-way, the read starts again from scratch once at the newest revision; a second
  compaction, or a caller's own ``revision`` that is compacted, is a StoreError
  saying so.
* **A write is sent again only if it cannot have left this client.** gRPC reports
  "failed to connect to all addresses", a refused connection or a failed name
  resolution (all ``UNAVAILABLE``) before the call is written to any connection:
  those are retried like reads (:func:`never_sent`). Anything else that breaks a write
  (a connection reset or broken pipe, ``DEADLINE_EXCEEDED``, etcd's own "request
  timed out") may come after etcd received the request, and etcd may have applied
  it: the store raises :class:`~callpark.errors.StoreIndeterminate` and never resends
  it. Callers settle the outcome by reading back what they wrote (see the KV
  contract), because a blind resend is wrong either way: a compare-and-set that did
  apply fails its compare when sent again, so the caller would be told it lost when
  it won, and an unguarded change sent again can land on top of a later one. Reads
  have no effect and are retried on every transient error.
  Lease grants are retried too: a grant that did apply and is granted again leaves
  an unused lease that etcd drops after its TTL.
* **Lease keepalives and revokes pass the fail-fast window.** ``fail_fast_s`` fails
  requests at once after a time-out, so callers queued behind a cut-off etcd do not
  each wait a time-out. Keepalives are the liveness signal: failing them unsent would
  let a slow but healthy etcd expire the leases of whole pools. They (and revokes,
  which give a lease back) are always sent, bounded by their own time-out, and an
  answered keepalive does not end the window for other requests (it proves the
  lease store answers, not that etcd serves requests in time); a keepalive that
  times out starts the window like any other time-out.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

# Before grpc loads: its C core would print TLS failures to stderr, which the store reports
# as one line instead (GRPC_VERBOSITY=ERROR in the environment brings them back).
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc
import pyetcd
from pyetcd import etcdrpc
from pyetcd import exceptions as etcd_exc
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

from callpark.errors import StoreAuthError, StoreError, StoreIndeterminate, StoreUnavailable
from callpark.store.access import EtcdAccess
from callpark.store.kv import Compare, Delete, Entry, Op, Put, Snapshot, TxnResult, prefix_end
from callpark.store.schema import APP_PREFIX

log = logging.getLogger(__name__)
T = TypeVar("T")

ENV_ENDPOINTS = "CALLPARK_ETCD"
DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"

_MIB = 1024 * 1024
# etcd refuses a request over --max-request-bytes (1.5 MiB by default) and its gRPC server takes
# at most that plus 512 KiB of framing: nothing larger can succeed, so nothing larger is sent.
MAX_SEND_BYTES = 2 * _MIB
# One response: a page of a prefix read, a single key or a txn answer. etcd sets no bound of its
# own on responses; 32 MiB holds a page of RANGE_PAGE_KEYS records (~600 bytes each) fifty times
# over and several whole 8 MiB music files, and still bounds the memory one response takes.
MAX_RECEIVE_BYTES = 32 * _MIB
# Keys per prefix-read page: ~1.2 MB of parked-call records, far below the receive limit.
RANGE_PAGE_KEYS = 2000
# A page over the receive limit is asked again with this many times fewer keys.
_PAGE_SHRINK = 8


@dataclass(frozen=True)
class EndpointHealth:
    url: str
    healthy: bool
    detail: str


def parse_endpoints(text: str | None) -> list[str]:
    """Parse comma-separated client URLs (``--etcd`` / ``CALLPARK_ETCD``), as etcdctl does."""
    raw = text if text is not None else os.environ.get(ENV_ENDPOINTS, DEFAULT_ENDPOINTS)
    urls = [u.strip() for u in raw.split(",") if u.strip()]
    if not urls:
        raise StoreError("no etcd endpoints given (use --etcd URLS or CALLPARK_ETCD)")
    for url in urls:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
            raise StoreError(f"etcd endpoint {url!r} is not a URL like http://127.0.0.1:2379")
    return [u if "://" in u else f"http://{u}" for u in urls]


class _Transient(Exception):
    """Internal: a failure worth retrying."""


class _Compacted(StoreError):
    """A range read asked for a revision etcd has compacted (``get_prefix`` handles it)."""


class _PageTooLarge(StoreError):
    """A range response was over :data:`MAX_RECEIVE_BYTES` (``get_prefix`` asks for fewer keys)."""


_COMPARE_OPS = {
    "==": etcdrpc.Compare.EQUAL,
    "!=": etcdrpc.Compare.NOT_EQUAL,
    "<": etcdrpc.Compare.LESS,
    ">": etcdrpc.Compare.GREATER,
}
_COMPARE_TARGETS = {
    "mod": (etcdrpc.Compare.MOD, "mod_revision"),
    "create": (etcdrpc.Compare.CREATE, "create_revision"),
    "version": (etcdrpc.Compare.VERSION, "version"),
    "value": (etcdrpc.Compare.VALUE, "value"),
    "lease": (etcdrpc.Compare.LEASE, "lease"),
}


@dataclass(frozen=True)
class Change:
    """One write seen in a history replay: ``put`` or ``delete`` of ``entry.key`` at ``entry.mod_revision``."""

    kind: str
    entry: Entry


class EtcdStore:
    """A :class:`~callpark.store.kv.KV` on a real etcd cluster (v3 gRPC API).

    ``https://`` endpoints use TLS: ``ca`` verifies the servers (system roots when
    None), ``cert``/``key`` authenticate this client. With ``user`` the store
    authenticates at once and again whenever etcd says the token expired or is older
    than the auth store; the password is kept only in memory and never logged.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        request_timeout_s: float = 2.0,
        retry_deadline_s: float = 6.0,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        user: str | None = None,
        password: str | None = None,
        fail_fast_s: float = 0.0,
    ) -> None:
        self.endpoints = list(endpoints)
        self.request_timeout_s = request_timeout_s
        self.retry_deadline_s = retry_deadline_s
        # After a request times out, fail every request at once for this long (0: never), so
        # callers that wait in line do not each spend a time-out finding out etcd is cut off.
        self.fail_fast_s = fail_fast_s
        self._down_until = 0.0
        self.user = user
        self._password = password
        self._token: str | None = None
        self.authentications = 0  # how often a token was fetched (tests, debugging)
        self._tls_files = (ca, cert, key)
        schemes = {urlsplit(url).scheme for url in self.endpoints}
        if len(schemes) > 1:
            raise StoreError("etcd endpoints mix http:// and https://: use one scheme for all")
        secure = schemes == {"https"}
        if not secure and (ca or cert):
            raise StoreError("etcd TLS files given but the endpoints are http://: use https:// URLs")
        if (user is None) != (password is None):
            raise StoreAuthError("etcd user and password go together")
        creds = _channel_credentials(ca, cert, key) if secure else None
        eps = [
            pyetcd.Endpoint(p.hostname, p.port, secure=secure, creds=creds, time_retry=1.0, opts=_channel_options())
            for p in (urlsplit(url) for url in self.endpoints)
        ]
        self._client: Any = pyetcd.MultiEndpointEtcd3Client(endpoints=eps, timeout=request_timeout_s, failover=True)
        if user is not None:
            try:
                self._authenticate()
            except BaseException:
                self._client.close()
                raise

    @classmethod
    def connect(cls, endpoints: str | EtcdAccess | None = None, **kwargs: Any) -> EtcdStore:
        """Build a store from ``--etcd``-style text (or ``CALLPARK_ETCD``), or from resolved
        :class:`~callpark.store.access.EtcdAccess` settings (TLS files, user, password file)."""
        if isinstance(endpoints, EtcdAccess):
            access = endpoints.validate()
            return cls(
                parse_endpoints(access.endpoints),
                ca=access.ca,
                cert=access.cert,
                key=access.key,
                user=access.user,
                password=access.password(),
                **kwargs,
            )
        return cls(parse_endpoints(endpoints), **kwargs)

    # -- KV contract -------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        resp = self._call(f"get {key}", lambda: self._range(key.encode(), b""))
        kvs = list(resp.kvs)
        return _entry(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str, revision: int | None = None) -> Snapshot:
        """Every key under ``prefix`` at one revision, read in pages (see the module docstring)."""
        try:
            return self._read_pages(prefix, revision)
        except _Compacted:
            if revision is not None:
                raise StoreError(
                    f"etcd get_prefix {prefix}: revision {revision} has been compacted; read the newest instead"
                ) from None
            log.info("etcd: history compacted while reading %s page by page; reading it again", prefix)
        try:
            return self._read_pages(prefix, None)
        except _Compacted:
            raise StoreError(
                f"etcd get_prefix {prefix}: etcd compacted the revision being read twice in a row; "
                "retry, or compact less often"
            ) from None

    def _read_pages(self, prefix: str, revision: int | None) -> Snapshot:
        key, end = prefix.encode(), prefix_end(prefix).encode("latin-1")
        pinned = revision or 0  # 0 until the first page says which revision it read
        limit = RANGE_PAGE_KEYS
        entries: dict[str, Entry] = {}
        while True:
            try:
                resp = self._call(f"get_prefix {prefix}", functools.partial(self._range, key, end, pinned, limit))
            except _PageTooLarge:
                if limit == 1:
                    raise StoreError(f"etcd get_prefix {prefix}: one value is over {MAX_RECEIVE_BYTES} bytes") from None
                limit = max(1, limit // _PAGE_SHRINK)
                continue
            pinned = pinned or int(resp.header.revision)
            entries.update((e.key, e) for e in (_entry(kv) for kv in resp.kvs))
            if not resp.more or not resp.kvs:
                return Snapshot(pinned, entries)
            key = bytes(resp.kvs[-1].key) + b"\x00"

    def txn(self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        request = etcdrpc.TxnRequest(
            compare=[_compare_msg(c) for c in compares],
            success=[_op_msg(o) for o in success],
            failure=[_op_msg(o) for o in failure],
        )
        first = next((x.key for x in (*compares, *success, *failure)), "")
        resp = self._call(
            f"txn on {first}",
            lambda: self._stub("kvstub").Txn(request, self.request_timeout_s, **self._auth()),
            write=True,
        )
        return TxnResult(bool(resp.succeeded), int(resp.header.revision))

    def grant_lease(self, ttl_s: int) -> int:
        req = etcdrpc.LeaseGrantRequest(TTL=ttl_s, ID=0)
        resp = self._call(
            "grant_lease",
            lambda: self._stub("leasestub").LeaseGrant(req, self.request_timeout_s, **self._auth()),
        )
        if resp.error:
            raise StoreError(f"etcd refused a lease: {resp.error}")
        return int(resp.ID)

    def refresh_lease(self, lease_id: int) -> int:
        """Renew a lease once; returns the new TTL, or -1 if the lease is gone."""

        def once() -> int:
            stream = self._stub("leasestub").LeaseKeepAlive(
                iter([etcdrpc.LeaseKeepAliveRequest(ID=lease_id)]), self.request_timeout_s, **self._auth()
            )
            for resp in stream:
                return int(resp.TTL) if resp.TTL > 0 else -1
            return -1

        return int(self._call("refresh_lease", once, deadline_s=self.request_timeout_s, liveness=True))

    def revoke_lease(self, lease_id: int) -> None:
        req = etcdrpc.LeaseRevokeRequest(ID=lease_id)
        try:
            self._call(
                "revoke_lease",
                lambda: self._stub("leasestub").LeaseRevoke(req, self.request_timeout_s, **self._auth()),
                liveness=True,
            )
        except StoreError as exc:
            if "requested lease not found" not in str(exc):
                raise

    def close(self) -> None:
        self._client.close()

    # -- health ------------------------------------------------------------------------

    def endpoint_health(self, timeout_s: float = 1.0) -> list[EndpointHealth]:
        """Ask every endpoint's ``/health`` (the same check etcdctl endpoint health does)."""
        result = []
        context = https_context(*self._tls_files) if self.endpoints[0].startswith("https") else None
        for url in self.endpoints:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=timeout_s, context=context) as r:
                    body = json.loads(r.read().decode())
                ok = str(body.get("health")) == "true"
                result.append(EndpointHealth(url, ok, "healthy" if ok else str(body)))
            except (OSError, ValueError, urllib.error.URLError) as exc:
                result.append(EndpointHealth(url, False, str(getattr(exc, "reason", exc))))
        return result

    def unreachable(self) -> bool:
        """True for ``fail_fast_s`` after a request timed out: requests fail at once meanwhile
        (except lease keepalives and revokes, see the module docstring)."""
        return time.monotonic() < self._down_until

    # -- replay ------------------------------------------------------------------------

    def changes(self, prefix: str, start_revision: int = 1, timeout_s: float = 20.0) -> list[Change]:
        """Every put and delete under ``prefix`` since ``start_revision``, in revision order.

        A watch replay (etcd keeps every revision until compaction): used by the chaos
        checker to read what really happened. A sentinel key written under the prefix
        marks where the replay ends; it is deleted afterwards and not returned.
        """
        sentinel = f"{prefix}~replay-end-{os.getpid()}-{time.time_ns()}"
        self.txn([], [Put(sentinel, b"")])
        done = threading.Event()
        create = etcdrpc.WatchCreateRequest(
            key=prefix.encode(), range_end=prefix_end(prefix).encode("latin-1"), start_revision=start_revision
        )

        def requests() -> Any:
            yield etcdrpc.WatchRequest(create_request=create)
            done.wait(timeout_s)

        out: list[Change] = []
        stream = etcdrpc.WatchStub(self._client.channel).Watch(requests(), timeout_s, **self._auth())
        try:
            for resp in stream:
                if resp.compact_revision:
                    raise StoreError(f"etcd history under {prefix} compacted up to {resp.compact_revision}")
                for ev in resp.events:
                    key = ev.kv.key.decode("utf-8", errors="replace")
                    if key == sentinel:
                        return out
                    kind = "delete" if ev.type == 1 else "put"  # mvccpb.Event.DELETE
                    out.append(Change(kind, _entry(ev.kv)))
        except grpc.RpcError as exc:
            raise StoreError(f"etcd history replay of {prefix} failed: {exc.details() or exc.code().name}") from None
        finally:
            done.set()
            stream.cancel()
            self.txn([], [Delete(sentinel)])
        raise StoreError(f"etcd history replay of {prefix} ended early")

    # -- internals ---------------------------------------------------------------------

    def _auth(self) -> dict[str, Any]:
        return {"credentials": None, "metadata": (("token", self._token),) if self._token else None}

    def _authenticate(self) -> None:
        req = etcdrpc.AuthenticateRequest(name=self.user, password=self._password)
        resp = self._call(
            "authenticate",
            lambda: self._stub("authstub").Authenticate(req, self.request_timeout_s),
            authenticating=True,
        )
        self._token = str(resp.token)
        self.authentications += 1
        log.debug("etcd: authenticated as %s", self.user)

    def enable_auth(self, *, root_password: str, user: str, password: str, prefix: str = APP_PREFIX) -> None:
        """Create ``root`` and ``user`` with a role (named after the user) that may read and
        write keys under ``prefix`` only, then turn etcd authentication on.

        Run once on a fresh cluster through a store without credentials (as
        ``etcdctl user add``/``role grant-permission --prefix``/``auth enable`` would)."""
        a = etcdrpc
        perm = a.Permission(permType=a.Permission.READWRITE, key=prefix.encode(), range_end=prefix_end(prefix).encode())
        steps: list[tuple[str, str, Any]] = [
            ("UserAdd", "add user root", a.AuthUserAddRequest(name="root", password=root_password)),
            ("UserGrantRole", "grant root", a.AuthUserGrantRoleRequest(user="root", role="root")),
            ("RoleAdd", f"add role {user}", a.AuthRoleAddRequest(name=user)),
            ("RoleGrantPermission", f"grant {prefix}", a.AuthRoleGrantPermissionRequest(name=user, perm=perm)),
            ("UserAdd", f"add user {user}", a.AuthUserAddRequest(name=user, password=password)),
            ("UserGrantRole", f"grant role {user}", a.AuthUserGrantRoleRequest(user=user, role=user)),
            ("AuthEnable", "enable auth", a.AuthEnableRequest()),
        ]
        for method, what, req in steps:
            self._auth_request(method, what, req)

    def add_scoped_user(self, user: str, password: str, grants: Sequence[tuple[str, str, bool]]) -> None:
        """Create ``user`` with a role of the same name holding ``grants`` (as ``root``).

        :param grants: ``(key, range_end, write)``: read (``write`` False) or read and write on
            ``[key, range_end)``, one key when ``range_end`` is empty.
        """
        a = etcdrpc
        steps: list[tuple[str, str, Any]] = [("RoleAdd", f"add role {user}", a.AuthRoleAddRequest(name=user))]
        for key, end, write in grants:
            kind = a.Permission.READWRITE if write else a.Permission.READ
            perm = a.Permission(permType=kind, key=key.encode(), range_end=end.encode("latin-1"))
            steps.append(
                ("RoleGrantPermission", f"grant {key}", a.AuthRoleGrantPermissionRequest(name=user, perm=perm))
            )
        steps.append(("UserAdd", f"add user {user}", a.AuthUserAddRequest(name=user, password=password)))
        steps.append(("UserGrantRole", f"grant role {user}", a.AuthUserGrantRoleRequest(user=user, role=user)))
        for method, what, req in steps:
            self._auth_request(method, what, req)

    def _auth_request(self, method: str, what: str, req: Any) -> None:
        self._call(
            f"auth ({what})",
            lambda: getattr(self._stub("authstub"), method)(req, self.request_timeout_s, **self._auth()),
        )

    def _stub(self, name: str) -> Any:
        return getattr(self._client, name)

    def _range(self, key: bytes, range_end: bytes, revision: int = 0, limit: int = 0) -> Any:
        req = etcdrpc.RangeRequest(key=key, range_end=range_end, serializable=False, revision=revision, limit=limit)
        try:
            return self._stub("kvstub").Range(req, self.request_timeout_s, **self._auth())
        except grpc.RpcError as exc:
            detail = exc.details() or ""
            if exc.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in detail:
                raise _Compacted(f"etcd range read at revision {revision}: {detail}") from None
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in detail:
                raise _PageTooLarge(f"etcd range read of {limit or 'all'} key(s): {detail}") from None
            raise

    def _call(
        self,
        what: str,
        fn: Any,
        *,
        write: bool = False,
        deadline_s: float | None = None,
        authenticating: bool = False,
        liveness: bool = False,
    ) -> Any:
        """Run ``fn`` with retries; ``write``: never resent unless :func:`never_sent`;
        ``liveness``: sent even in the fail-fast window, and an answer does not end it."""
        started = time.monotonic()
        retrying = Retrying(
            stop=stop_after_delay(self.retry_deadline_s if deadline_s is None else deadline_s),
            wait=wait_random_exponential(multiplier=0.05, max=0.5),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    if not liveness and self.unreachable():
                        raise StoreUnavailable(
                            f"etcd unreachable at {','.join(self.endpoints)} ({what}): "
                            "failing fast after a time-out, retrying shortly"
                        )
                    try:
                        result = fn()
                        if not liveness:
                            self._down_until = 0.0
                        return result
                    except grpc.RpcError as exc:
                        if not authenticating and self.user is not None and _stale_token(exc):
                            # refused before it was applied: safe to retry, even a write
                            log.info("etcd: auth token no longer valid (%s); authenticating again", exc.details())
                            self._authenticate()
                            raise _Transient("auth token expired") from None
                        self._translate(what, exc, write=write)
                    except etcd_exc.NoServerAvailableError:
                        raise _Transient("no etcd endpoint available") from None
        except _Transient as exc:
            waited = time.monotonic() - started
            raise StoreUnavailable(
                f"etcd unreachable at {','.join(self.endpoints)} ({what}, {waited:.1f}s): {exc}"
            ) from None
        raise StoreError(f"etcd {what} gave no result")  # pragma: no cover - Retrying always returns

    def _translate(self, what: str, exc: grpc.RpcError, *, write: bool) -> None:
        code = exc.code()
        detail = exc.details() or code.name
        lowered = detail.lower()
        _refuse_auth_and_tls(what, detail, self.user)
        server_timeout = code == grpc.StatusCode.UNKNOWN and any(
            marker in lowered for marker in ("deadline exceeded", "timed out", "leader")
        )
        if server_timeout or code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.INTERNAL,
        ):
            self._client.endpoint_in_use.fail()
            self._client._clear_old_stubs()
            unsent = never_sent(code, detail)
            if self.fail_fast_s and not unsent:  # a time-out or a lost connection, not a refused one
                self._down_until = time.monotonic() + self.fail_fast_s
            if write and not unsent:  # etcd may have applied it: resending could apply it twice
                raise StoreIndeterminate(f"etcd {what} outcome unknown: {detail}") from None
            raise _Transient(detail) from None
        raise StoreError(f"etcd {what} failed: {detail}") from None


# gRPC's words for a call that failed before it was written to any connection. "failed to connect
# to all addresses" is the channel's own refusal when no connection is up, whatever its last error.
_UNSENT_MARKERS = (
    "connection refused",
    "dns resolution failed",
    "name resolution",
    "name or service not known",
    "could not resolve",
    "empty address list",
)
# Words for a connection lost, or a request left unanswered, once a call was on it.
_IN_FLIGHT_MARKERS = ("reset by peer", "broken pipe", "socket closed", "stream removed", "goaway", "timed out", "eof")


def never_sent(code: grpc.StatusCode, detail: str) -> bool:
    """True only when the failed request cannot have left this client, so etcd cannot
    have applied it and sending it again is safe even for a write.

    Only ``UNAVAILABLE`` can mean that: ``DEADLINE_EXCEEDED``, ``INTERNAL`` and etcd's
    own errors (``etcdserver: ...``: etcd got the request) all may come after etcd
    applied a write. An ``UNAVAILABLE`` with unknown words counts as sent.
    """
    if code != grpc.StatusCode.UNAVAILABLE:
        return False
    lowered = detail.lower()
    if lowered.startswith("etcdserver:"):
        return False
    if "failed to connect to all addresses" in lowered:
        return True
    if any(marker in lowered for marker in _IN_FLIGHT_MARKERS):
        return False
    return any(marker in lowered for marker in _UNSENT_MARKERS)


def _channel_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ]


def _stale_token(exc: grpc.RpcError) -> bool:
    detail = (exc.details() or "").lower()
    return "invalid auth token" in detail or "revision of auth store is old" in detail


_CLIENT_CERT_REFUSED = ("tsi_data_corrupted", "bad_certificate", "certificate_required", "unknown_ca")


def _refuse_auth_and_tls(what: str, detail: str, user: str | None) -> None:
    """Raise a one-line error for credential problems: retrying would not help."""
    lowered = detail.lower()
    if "authentication failed" in lowered:
        raise StoreAuthError(f"etcd refused user {user!r}: wrong user name or password") from None
    if "user name is empty" in lowered or "user name not found" in lowered:
        raise StoreAuthError(
            "etcd requires authentication: give --etcd-user and --etcd-password-file (or CALLPARK_ETCD_USER ...)"
        ) from None
    if "permission denied" in lowered:
        who = f"user {user!r}" if user else "this client (no etcd user given: use --etcd-user)"
        raise StoreAuthError(f"etcd {what}: permission denied for {who}") from None
    if "auth: not enabled" in lowered or "authentication is not enabled" in lowered:
        raise StoreAuthError(f"etcd {what}: authentication is not enabled on this cluster") from None
    if "certificate_verify_failed" in lowered:
        reason = detail.split("CERTIFICATE_VERIFY_FAILED", 1)[-1].strip(": ").removesuffix(": OK")
        raise StoreAuthError(
            f"etcd {what}: the server's TLS certificate is not trusted ({reason or 'verify failed'}); check --etcd-ca"
        ) from None
    if "peer name" in lowered and "certificate" in lowered:
        raise StoreAuthError(f"etcd {what}: the server's TLS certificate does not name the endpoint's host") from None
    if any(marker in lowered for marker in _CLIENT_CERT_REFUSED):
        raise StoreAuthError(
            f"etcd {what}: etcd refused the TLS client certificate (none given, or not signed by the CA it trusts); "
            "check --etcd-cert and --etcd-key"
        ) from None


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise StoreError(f"etcd {what} {path}: cannot read: {exc.strerror}") from None


def _channel_credentials(ca: str | None, cert: str | None, key: str | None) -> Any:
    if (cert is None) != (key is None):
        raise StoreError("etcd client certificate and key go together")
    return grpc.ssl_channel_credentials(_read(ca, "CA file"), _read(key, "client key"), _read(cert, "client cert"))


def https_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """An SSL context for etcd's HTTP endpoints (``/health``) with the same files."""
    context = ssl.create_default_context(cafile=ca)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def _entry(kv: Any) -> Entry:
    return Entry(
        key=kv.key.decode("utf-8", errors="replace"),
        value=bytes(kv.value),
        create_revision=int(kv.create_revision),
        mod_revision=int(kv.mod_revision),
        version=int(kv.version),
        lease=int(kv.lease),
    )


def _compare_msg(c: Compare) -> Any:
    target, field_name = _COMPARE_TARGETS[c.target]
    msg = etcdrpc.Compare(key=c.key.encode(), result=_COMPARE_OPS[c.op], target=target)
    setattr(msg, field_name, c.operand)
    if c.range_end is not None:
        msg.range_end = c.range_end.encode("latin-1")
    return msg


def _op_msg(op: Op) -> Any:
    if isinstance(op, Put):
        return etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=op.key.encode(), value=op.value, lease=op.lease))
    if isinstance(op, Delete):
        end = prefix_end(op.key).encode("latin-1") if op.prefix else b""
        return etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=op.key.encode(), range_end=end))
    raise StoreError(f"unknown txn op {op!r}")
