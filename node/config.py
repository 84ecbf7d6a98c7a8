"""How one park node runs: :class:`NodeConfig`, validated at start-up, and the node's sizes."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path

from callpark.admintoken import AdminToken
from callpark.errors import CallparkError
from callpark.peers import DEFAULT_TRUSTED_PEERS, TrustedPeers, host_of, is_ip, resolve_host
from callpark.ratelimit import ScanLimit
from callpark.store.session import LeaseTimings

MAX_CALLS_PER_WORKER = 4  # pjsua2 wheel's compile-time PJSUA_MAX_CALLS
MAX_WORKERS = 256  # 3 parked calls each: 768 per node; about 15 MB of memory per worker
RTP_PORTS_PER_WORKER = 16


@dataclass(frozen=True)
class NodeConfig:
    """How one park node runs (validated at start-up)."""

    pool: str
    name: str
    run_dir: Path
    workers: int = 2
    host: str = "127.0.0.1"
    http_port: int = 0
    edge: str | None = None
    domain: str = "callpark.test"
    target_domains: tuple[str, ...] = ()  # besides domain: hosts ringbacks/MESSAGEs/OnTimeoutURI may address
    ring_time_s: float = 20.0
    timings: LeaseTimings = field(default_factory=LeaseTimings)
    worker_log_level: str = "WARNING"
    sip_port_base: int = 0  # worker i listens on base+i; 0: free ports picked at start
    rtp_port_base: int = 0  # worker i uses base + i*RTP_PORTS_PER_WORKER ...; 0: picked at start
    trusted_peers: tuple[str, ...] | None = None  # None: only the edge (loopback without --edge)
    edge_ips: tuple[str, ...] = ()  # the --edge host's addresses, resolved at start (:meth:`resolved`)
    scan_limit: ScanLimit = field(default_factory=ScanLimit)
    admin_token: AdminToken | None = None  # None: the HTTP API is read-only
    blf_expires_s: int = 60  # BLF PUBLISH expiry (refreshed at half); 0: no BLF publishing (node/blf.py)
    parker_notices: bool = True  # tell parkers by MESSAGE: retrieved, abandoned, forwarded, taken over
    http_tls: ssl.SSLContext | None = None  # None: plain HTTP (--http-cert/--http-key)
    announce_blind: bool = False  # call a blind parker back and speak the orbit (ParkAndAnnounce)

    @property
    def allowed_domains(self) -> frozenset[str]:
        """Hosts a ringback, orbit MESSAGE or OnTimeoutURI transfer may address (no toll fraud)."""
        return frozenset(d.lower() for d in (self.domain, *self.target_domains))

    def resolved(self) -> NodeConfig:
        """A copy with the ``--edge`` host name resolved to :attr:`edge_ips` (one-line error if not)."""
        return replace(self, edge_ips=resolve_host(self.edge)) if self.edge else self

    def _edge_hosts(self) -> tuple[str, ...]:
        if self.edge_ips:
            return self.edge_ips
        return (host_of(self.edge),) if self.edge and is_ip(host_of(self.edge)) else ()

    def peers(self) -> TrustedPeers:
        """Who may send this node SIP requests: ``trusted_peers`` (when given) and always the edge.

        Secure default: with an edge, only the edge, so phones cannot skip its ACL and
        authentication by calling a node directly (403); without one, loopback.
        """
        edge = self._edge_hosts()
        if self.trusted_peers is not None:
            peers = TrustedPeers.parse(self.trusted_peers, where="--trusted-peers")
        elif edge:
            peers = TrustedPeers(())
        else:
            peers = TrustedPeers.parse(DEFAULT_TRUSTED_PEERS)
        for ip in edge:
            peers = peers.with_host(ip)
        return peers

    def is_edge(self, peer: str) -> bool:
        """True when ``peer`` (``ip:port``) is the edge's address (its host resolved at start)."""
        if not self.edge or not peer:
            return False
        if peer == self.edge:
            return True
        port = self.edge.rsplit(":", 1)[-1] if ":" in self.edge else "5060"
        return host_of(peer) in self._edge_hosts() and peer.rsplit(":", 1)[-1] == port

    def validate(self) -> NodeConfig:
        if not self.peers().networks:
            raise CallparkError(f"--edge {self.edge}: its host is not an address; start the node with resolved()")
        self.scan_limit.validate()
        if not 1 <= self.workers <= MAX_WORKERS:
            raise CallparkError(f"--workers must be 1 to {MAX_WORKERS}, not {self.workers}")
        if not 1.0 <= self.ring_time_s <= 300.0:
            raise CallparkError(f"--ring-time must be 1 to 300 seconds, not {self.ring_time_s}")
        self.timings.validate()
        if self.blf_expires_s and not 10 <= self.blf_expires_s <= 3600:
            raise CallparkError(f"--blf-expires must be 0 (off) or 10 to 3600 seconds, not {self.blf_expires_s}")
        sip_top = self.sip_port_base + self.workers - 1
        if self.sip_port_base and (self.sip_port_base < 1024 or sip_top > 65535):
            raise CallparkError(f"--sip-port-base {self.sip_port_base}: worker ports must be 1024 to 65535")
        rtp_top = self.rtp_port_base + self.workers * RTP_PORTS_PER_WORKER - 1
        if self.rtp_port_base and (self.rtp_port_base < 1024 or rtp_top > 65535):
            raise CallparkError(f"--rtp-port-base {self.rtp_port_base}: RTP ports must be 1024 to 65535")
        return self
