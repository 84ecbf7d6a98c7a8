"""Real etcd members on loopback: ephemeral ports, own data dirs, logs kept, stopped by PID.

Used by ``callpark up``/``demo``, by the pytest fixtures and by the chaos suite. The
server is Debian's ``etcd-server`` 3.4.23 (see docs/ARCHITECTURE.md for why not 3.5.0-2).

Secure mode (``tls=True``): a throwaway CA and certificates (:mod:`callpark.lab.tls`),
mutual TLS between members, TLS (with client certificates unless
``client_cert_auth=False``) for clients, ``https://`` URLs. ``auth=True`` also enables
etcd authentication with ``root`` and a ``callpark`` user whose role may read and write
``/callpark/`` only; their random passwords are in 0600 files; :meth:`access` returns
the settings a client needs.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import ssl
import urllib.request
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

from callpark.errors import CallparkError
from callpark.lab.tls import Pki, make_pki
from callpark.netutil import LOOPBACK, free_port
from callpark.procs import ManagedProcess, StopsOnExit
from callpark.store.access import EtcdAccess
from callpark.waiting import WaitTimeout, wait_until

log = logging.getLogger(__name__)

ETCD_BINARY = "etcd"
SERVICE_USER = "callpark"  # the etcd user (and role) of callpark's processes
CLIENT_CN = "callpark-client"  # no etcd user has this name: a certificate alone grants nothing


class EtcdStartError(CallparkError):
    """A member did not become healthy."""


@dataclass
class EtcdMember:
    """One etcd member process and its addresses."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    process: ManagedProcess | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{LOOPBACK}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://{LOOPBACK}:{self.peer_port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise EtcdStartError(f"etcd member {self.name} is not running")
        return self.process.pid

    def is_running(self) -> bool:
        return self.process is not None and self.process.is_running()

    def healthy(self, timeout_s: float = 0.5) -> bool:
        try:
            with urllib.request.urlopen(
                f"{self.client_url}/health", timeout=timeout_s, context=self.ssl_context
            ) as resp:
                return str(json.loads(resp.read().decode()).get("health")) == "true"
        except (OSError, ValueError):
            return False


class LocalEtcdCluster(StopsOnExit):
    """One etcd cluster of 1 or 3 (any odd number of) members on loopback."""

    def __init__(
        self,
        base_dir: Path,
        *,
        members: int = 1,
        name: str = "callpark",
        tls: bool = False,
        client_cert_auth: bool = True,
        auth: bool = False,
        auth_token_ttl_s: int | None = None,
        log_level: str = "warn",
        compaction_retention: str = "1h",
        quota_backend_bytes: int = 2 * 1024**3,
    ) -> None:
        if members < 1 or members % 2 == 0:
            raise EtcdStartError(f"an etcd cluster needs an odd number of members, not {members}")
        if shutil.which(ETCD_BINARY) is None:
            raise EtcdStartError("etcd is not installed; run scripts/bootstrap.sh (apt-get install etcd-server)")
        self.base_dir = base_dir
        self.listen_all_addresses = False  # listen for clients on 0.0.0.0 (only in a private network namespace)
        self.token = f"{name}-{uuid.uuid4().hex[:12]}"
        self.client_cert_auth = client_cert_auth
        self.auth = auth
        self.auth_token_ttl_s = auth_token_ttl_s
        self.log_level = log_level
        self.compaction_retention = compaction_retention
        self.quota_backend_bytes = quota_backend_bytes
        self.pki: Pki | None = None
        context: ssl.SSLContext | None = None
        if tls:
            self.pki = make_pki(base_dir / "pki", {"client": CLIENT_CN})
            client = self.pki.clients["client"]
            context = ssl.create_default_context(cafile=str(self.pki.ca))
            context.load_cert_chain(str(client.cert), str(client.key))
        self.secrets_dir = base_dir / "secrets"
        self.members = [
            EtcdMember(
                name=f"etcd{i}",
                client_port=free_port(),
                peer_port=free_port(),
                data_dir=base_dir / f"etcd{i}" / "data",
                log_path=base_dir / f"etcd{i}" / "etcd.log",
                ssl_context=context,
            )
            for i in range(members)
        ]

    @property
    def client_urls(self) -> list[str]:
        return [m.client_url for m in self.members]

    @property
    def endpoints(self) -> str:
        """Comma-separated client URLs, the form ``--etcd`` and ``CALLPARK_ETCD`` take."""
        return ",".join(self.client_urls)

    def access(self, user: str | None = SERVICE_USER) -> EtcdAccess:
        """What a client needs: endpoints, TLS files, and (with auth) a user and password file.

        ``user`` is ``callpark`` (the service's role) or ``root``; ignored without auth."""
        ca = cert = key = None
        if self.pki is not None:
            ca = str(self.pki.ca)
            if self.client_cert_auth:
                cert, key = str(self.pki.clients["client"].cert), str(self.pki.clients["client"].key)
        base = EtcdAccess(endpoints=self.endpoints, ca=ca, cert=cert, key=key)
        if not self.auth or user is None:
            return base
        return replace(base, user=user, password_file=str(self.secrets_dir / f"{user}.password"))

    def start(self, timeout_s: float = 20.0) -> LocalEtcdCluster:
        """Start every member and wait until each reports healthy (then enable auth)."""
        try:
            for member in self.members:
                self._spawn(member, initial_state="new")
            self.wait_healthy(timeout_s)
            if self.auth:
                self._enable_auth()
        except BaseException:
            self.stop()
            raise
        log.info("etcd cluster up: %s", self.endpoints)
        return self

    def _enable_auth(self) -> None:
        from callpark.store.etcd import EtcdStore  # the only etcd client

        self.secrets_dir.mkdir(parents=True, exist_ok=True)
        self.secrets_dir.chmod(0o700)
        passwords = {}
        for user in ("root", SERVICE_USER):
            passwords[user] = secrets.token_urlsafe(24)
            fd = os.open(self.secrets_dir / f"{user}.password", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(passwords[user] + "\n")
        store = EtcdStore.connect(self.access(user=None), retry_deadline_s=10)
        try:
            store.enable_auth(root_password=passwords["root"], user=SERVICE_USER, password=passwords[SERVICE_USER])
        finally:
            store.close()

    def wait_healthy(self, timeout_s: float = 20.0, members: list[EtcdMember] | None = None) -> None:
        targets = members if members is not None else self.members

        def all_healthy() -> bool:
            for m in targets:
                if m.process is not None:
                    m.process.check_running()
            return all(m.healthy() for m in targets)

        try:
            wait_until(all_healthy, timeout=timeout_s, what="etcd members to report healthy")
        except (WaitTimeout, CallparkError, RuntimeError) as exc:
            tails = "\n".join(f"--- {m.name}:\n{m.process.log_tail(8) if m.process else ''}" for m in targets)
            raise EtcdStartError(f"etcd did not become healthy: {exc}\n{tails}") from None

    def _spawn(self, member: EtcdMember, initial_state: str) -> None:
        member.data_dir.mkdir(parents=True, exist_ok=True)
        initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        argv = [
            ETCD_BINARY,
            "--name",
            member.name,
            "--data-dir",
            str(member.data_dir),
            "--listen-client-urls",
            member.client_url.replace(LOOPBACK, "0.0.0.0") if self.listen_all_addresses else member.client_url,
            "--advertise-client-urls",
            member.client_url,
            "--listen-peer-urls",
            member.peer_url,
            "--initial-advertise-peer-urls",
            member.peer_url,
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            initial_state,
            "--initial-cluster-token",
            self.token,
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
            "--log-level",
            self.log_level,
            "--heartbeat-interval",
            "100",
            "--election-timeout",
            "1000",
            # bounded like production (deploy/multi-host/etcd/*.env): an hour of revisions, 2 GiB
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            self.compaction_retention,
            "--quota-backend-bytes",
            str(self.quota_backend_bytes),
        ]
        if self.pki is not None:
            pki = self.pki
            argv += ["--cert-file", str(pki.server.cert), "--key-file", str(pki.server.key)]
            argv += ["--trusted-ca-file", str(pki.ca)]
            if self.client_cert_auth:
                argv += ["--client-cert-auth"]
            argv += ["--peer-cert-file", str(pki.peer.cert), "--peer-key-file", str(pki.peer.key)]
            argv += ["--peer-trusted-ca-file", str(pki.ca), "--peer-client-cert-auth"]
        if self.auth_token_ttl_s is not None:
            argv += ["--auth-token-ttl", str(self.auth_token_ttl_s)]
        member.process = ManagedProcess(f"etcd:{member.name}", argv, log_path=member.log_path).start()

    # -- faults and recovery (tests and chaos) ------------------------------------------

    def kill(self, index: int) -> None:
        """SIGKILL one member (its data dir is kept, so it can be restarted)."""
        member = self.members[index]
        if member.process is not None:
            member.process.kill9()
            member.process.stop()
            member.process = None

    def pause(self, index: int) -> None:
        if self.members[index].process is not None:
            self.members[index].process.signal(signal.SIGSTOP)  # type: ignore[union-attr]

    def resume(self, index: int) -> None:
        if self.members[index].process is not None:
            self.members[index].process.signal(signal.SIGCONT)  # type: ignore[union-attr]

    def restart(self, index: int, timeout_s: float = 20.0) -> None:
        """Start a stopped member again from its data dir and wait for it."""
        member = self.members[index]
        if member.is_running():
            return
        self._spawn(member, initial_state="existing")
        self.wait_healthy(timeout_s, [member])

    def stop(self) -> None:
        """Stop every member (SIGTERM, then SIGKILL); idempotent."""
        for member in self.members:
            if member.process is not None:
                member.process.stop(timeout=5.0)
                member.process = None

    def __enter__(self) -> LocalEtcdCluster:
        return self.start()
