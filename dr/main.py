"""``callpark controller``: run a failover controller (several may run; one leads) until
SIGTERM or Ctrl-C, with ``/metrics``, ``/healthz``, ``/readyz``, ``/api/status`` and the
admin API on HTTP.

The CLI adds :func:`add_arguments` to its ``controller`` command and calls
:func:`run` with :func:`service_from_args`; the ready line on stdout
(``{"event": "ready", "name": ..., "http": PORT}``) is what
:class:`callpark.lab.controllerproc.ControllerProcess` waits for.
"""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import threading
import time
from dataclasses import dataclass

from callpark import admintoken
from callpark.admintoken import AdminToken
from callpark.dr.adminapi import controller_actions
from callpark.dr.controller import Controller, ControllerConfig
from callpark.httpapi import NodeHttp
from callpark.httpserver import add_https_options, https_from_args
from callpark.store.access import EtcdAccess
from callpark.store.etcd import EtcdStore

ADMIN_TOKEN_HELP = "file holding the HTTP admin token (or $CALLPARK_ADMIN_TOKEN_FILE); without one the API is read-only"

# ControllerConfig field -> the option that gives it
_CONFIG_OPTIONS = {
    "name": "name",
    "loop_s": "loop",
    "grace_s": "grace",
    "ttl_s": "lease_ttl",
    "safety_s": "safety",
    "request_timeout_s": "etcd_timeout",
}


@dataclass(frozen=True)
class ControllerService:
    """One controller process: its timings plus where its HTTP server listens."""

    controller: ControllerConfig
    http_host: str = "127.0.0.1"
    http_port: int = 0
    admin_token: AdminToken | None = None  # None: the HTTP API is read-only
    http_tls: ssl.SSLContext | None = None  # None: plain HTTP (--http-cert/--http-key)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``callpark controller``."""
    p.add_argument("--name", required=True)
    p.add_argument("--loop", type=float, default=1.0, help="seconds between cycles")
    p.add_argument("--grace", type=float, default=2.0, help="seconds a pool must be down before failover")
    p.add_argument("--lease-ttl", type=int, default=6)
    p.add_argument("--safety", type=float, default=1.5)
    p.add_argument("--etcd-timeout", type=float, default=1.0)
    p.add_argument("--http-port", type=int, default=0)
    p.add_argument("--http-host", default="127.0.0.1", help="address /metrics, /healthz, /readyz listen on")
    p.add_argument("--admin-token-file", help=ADMIN_TOKEN_HELP)
    add_https_options(p)


def controller_config(args: argparse.Namespace) -> ControllerConfig:
    """The validated controller timings from :func:`add_arguments`' options."""
    return ControllerConfig(**{name: getattr(args, option) for name, option in _CONFIG_OPTIONS.items()}).validate()


def service_from_args(args: argparse.Namespace) -> ControllerService:
    """The validated service settings from :func:`add_arguments`' options (reads the token file)."""
    config = controller_config(args)
    token = admintoken.from_option(args.admin_token_file)
    return ControllerService(config, args.http_host, args.http_port, token, https_from_args(args))


def run(service: ControllerService, etcd: EtcdAccess | str | None) -> int:
    """Serve until SIGTERM or SIGINT; prints the ready line once HTTP is up. Returns 0."""
    config = service.controller
    timeout = config.request_timeout_s
    store = EtcdStore.connect(etcd, request_timeout_s=timeout, retry_deadline_s=timeout)
    controller = Controller(store, config)
    http = _http(service, controller, store)
    http.start()
    signal.signal(signal.SIGTERM, lambda signum, frame: controller.stop())
    signal.signal(signal.SIGINT, lambda signum, frame: controller.stop())
    print(json.dumps({"event": "ready", "name": config.name, "http": http.port, "scheme": http.scheme}), flush=True)
    thread = threading.Thread(target=controller.run, name="controller", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.5)
    finally:
        http.stop()
        store.close()
    return 0


def _http(service: ControllerService, controller: Controller, store: EtcdStore) -> NodeHttp:
    ttl_s = service.controller.ttl_s

    def healthy() -> tuple[bool, str]:
        stalled = time.monotonic() - controller.last_cycle
        return (stalled < ttl_s, f"last cycle {stalled:.1f}s ago")

    def ready() -> tuple[bool, str]:
        ok, why = healthy()
        return ok, ("leader" if controller.leadership.is_leader() else "standby") if ok else why

    return NodeHttp(
        service.http_host,
        service.http_port,
        registry=controller.metrics.registry,
        healthy=healthy,
        ready=ready,
        api={"/api/status": controller.status},
        admin_token=service.admin_token,
        actions=controller_actions(store),
        tls=service.http_tls,
    )
