"""How one park node runs: :class:`NodeConfig`, validated at start-up, and the node's sizes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from callpark.admintoken import AdminToken
from callpark.errors import CallparkError
from callpark.peers import DEFAULT_TRUSTED_PEERS, TrustedPeers
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
    trusted_peers: tuple[str, ...] = DEFAULT_TRUSTED_PEERS  # the --edge host is always added
    scan_limit: ScanLimit = field(default_factory=ScanLimit)
    admin_token: AdminToken | None = None  # None: the HTTP API is read-only
    announce_blind: bool = False  # call a blind parker back and speak the orbit (ParkAndAnnounce)

    @property
    def allowed_domains(self) -> frozenset[str]:
        """Hosts a ringback, orbit MESSAGE or OnTimeoutURI transfer may address (no toll fraud)."""
        return frozenset(d.lower() for d in (self.domain, *self.target_domains))

    def validate(self) -> NodeConfig:
        TrustedPeers.parse(self.trusted_peers, where="--trusted-peers")
        self.scan_limit.validate()
        if not 1 <= self.workers <= MAX_WORKERS:
            raise CallparkError(f"--workers must be 1 to {MAX_WORKERS}, not {self.workers}")
        if not 1.0 <= self.ring_time_s <= 300.0:
            raise CallparkError(f"--ring-time must be 1 to 300 seconds, not {self.ring_time_s}")
        self.timings.validate()
        sip_top = self.sip_port_base + self.workers - 1
        if self.sip_port_base and (self.sip_port_base < 1024 or sip_top > 65535):
            raise CallparkError(f"--sip-port-base {self.sip_port_base}: worker ports must be 1024 to 65535")
        rtp_top = self.rtp_port_base + self.workers * RTP_PORTS_PER_WORKER - 1
        if self.rtp_port_base and (self.rtp_port_base < 1024 or rtp_top > 65535):
            raise CallparkError(f"--rtp-port-base {self.rtp_port_base}: RTP ports must be 1024 to 65535")
        return self
