"""``callpark node``: run a park node (supervisor and pjsua2 workers) in the foreground until
SIGTERM or Ctrl-C.

The CLI adds :func:`add_arguments` to its ``node`` command and calls :func:`run` with
:func:`config_from_args`; the ready line on stdout (``{"event": "ready", "http": PORT,
...the node view}``) is what :class:`callpark.lab.nodeproc.NodeProcess` waits for.
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
from pathlib import Path
from typing import Any

from callpark import admintoken
from callpark.httpserver import add_https_options, https_from_args
from callpark.node.supervisor import NodeConfig, Supervisor
from callpark.peers import host_of, parse_peers
from callpark.ratelimit import ScanLimit
from callpark.store.access import EtcdAccess
from callpark.store.etcd import EtcdStore
from callpark.store.session import LeaseTimings

ADMIN_TOKEN_HELP = "file holding the HTTP admin token (or $CALLPARK_ADMIN_TOKEN_FILE); without one the API is read-only"

# NodeConfig fields given by the option of the same name (the rest are built below)
_SAME_NAME = (
    "pool",
    "name",
    "workers",
    "http_port",
    "edge",
    "domain",
    "worker_log_level",
    "host",
    "sip_port_base",
    "rtp_port_base",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``callpark node``."""
    p.add_argument("--pool", required=True)
    p.add_argument("--name", required=True, help="node name, unique in the pool")
    p.add_argument("--workers", type=int, default=2, help="pjsua2 worker processes (4 calls each)")
    p.add_argument("--http-port", type=int, default=0, help="port of /metrics, /healthz, /readyz (0: any)")
    p.add_argument("--edge", help="host:port of the SIP edge (outbound proxy and registrar)")
    p.add_argument(
        "--domain",
        help="the deployment's SIP domain: From of orbit MESSAGEs, ringbacks (default: the --edge host, else --host)",
    )
    p.add_argument(
        "--target-domains",
        default="",
        help="comma-separated SIP domains besides --domain that ringbacks, orbit MESSAGEs and OnTimeoutURI may address",
    )
    p.add_argument("--ring-time", type=float, default=20.0, help="seconds a ringback rings (default 20)")
    p.add_argument("--lease-ttl", type=int, default=10)
    p.add_argument("--keepalive", type=float, default=2.0)
    p.add_argument("--safety", type=float, default=2.0, help="stop serving this long before the lease can expire")
    p.add_argument("--etcd-timeout", type=float, default=1.0, help="per-request etcd timeout")
    p.add_argument("--run-dir", help="where worker logs and music go (default: a new temporary dir)")
    p.add_argument("--worker-log-level", default="WARNING")
    p.add_argument("--host", default="127.0.0.1", help="address workers (SIP, RTP) and HTTP listen on")
    p.add_argument("--sip-port-base", type=int, default=0, help="worker i listens on BASE+i (default: free ports)")
    p.add_argument("--rtp-port-base", type=int, default=0, help="worker i gets 16 RTP ports from BASE+16*i")
    p.add_argument(
        "--trusted-peers",
        default=None,
        help="addresses/CIDR networks allowed to send SIP requests besides the --edge host"
        " (default: only the edge; loopback when there is no --edge)",
    )
    p.add_argument("--orbit-scan-burst", type=int, default=10, help="orbit misses a source may make at once")
    p.add_argument("--orbit-scan-per-minute", type=float, default=6.0, help="orbit misses per minute, sustained")
    p.add_argument("--admin-token-file", help=ADMIN_TOKEN_HELP)
    p.add_argument(
        "--blf-expires", type=int, default=60, help="BLF PUBLISH expiry in seconds, refreshed at half (0: no BLF)"
    )
    p.add_argument(
        "--parker-notices",
        choices=("on", "off"),
        default="on",
        help="MESSAGE the parker when its call is retrieved, abandoned, forwarded or taken over (default on)",
    )
    p.add_argument(
        "--announce-blind",
        action="store_true",
        help="after a blind park, call the parker back and speak the orbit (off by default)",
    )
    add_https_options(p)


def lease_timings(args: argparse.Namespace) -> LeaseTimings:
    """The lease timings from :func:`add_arguments`' options (validated with the node configuration)."""
    return LeaseTimings(
        ttl_s=args.lease_ttl, keepalive_s=args.keepalive, safety_s=args.safety, request_timeout_s=args.etcd_timeout
    )


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    """The validated node configuration from :func:`add_arguments`' options.

    Without ``--run-dir`` a new temporary directory is made for the node.
    """
    timings = lease_timings(args)
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix=f"callpark-{args.name}-"))
    same = {name: getattr(args, name) for name in _SAME_NAME}
    same["domain"] = args.domain or (host_of(args.edge) if args.edge else args.host)
    return (
        NodeConfig(
            **same,
            target_domains=tuple(d.strip() for d in args.target_domains.split(",") if d.strip()),
            run_dir=run_dir,
            ring_time_s=args.ring_time,
            timings=timings,
            trusted_peers=(
                tuple(str(n) for n in parse_peers(args.trusted_peers, where="--trusted-peers"))
                if args.trusted_peers is not None
                else None
            ),
            scan_limit=ScanLimit(burst=args.orbit_scan_burst, per_minute=args.orbit_scan_per_minute),
            admin_token=admintoken.from_option(args.admin_token_file),
            blf_expires_s=args.blf_expires,
            parker_notices=args.parker_notices == "on",
            http_tls=https_from_args(args),
            announce_blind=args.announce_blind,
        )
        .resolved()
        .validate()
    )


def run(config: NodeConfig, etcd: EtcdAccess | str | None) -> int:
    """Start the node, print the ready line, supervise until SIGTERM or SIGINT. Returns 0."""
    t = config.timings
    store = EtcdStore.connect(
        etcd,
        request_timeout_s=t.request_timeout_s,
        retry_deadline_s=t.request_timeout_s * 2,
        fail_fast_s=t.keepalive_s,  # after a time-out, park requests go elsewhere at once
    )
    supervisor = Supervisor(config, store)

    def on_signal(signum: int, frame: Any) -> None:
        supervisor._stop.set()  # only wakes run(); the finally below does the stopping

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        supervisor.start()
        view = supervisor.node_view()
        assert supervisor.http is not None
        print(
            json.dumps({"event": "ready", "http": supervisor.http.port, "scheme": supervisor.http.scheme, **view}),
            flush=True,
        )
        supervisor.run()
    finally:
        supervisor.stop()
        store.close()
    return 0
