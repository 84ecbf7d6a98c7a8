"""The SIP edge as a managed local process: a Kamailio instance with a generated config.

:class:`Edge` writes ``kamailio.cfg`` and ``dispatcher.list`` into its run directory, starts
``kamailio`` in the foreground (its own process group, stderr to ``kamailio.log``), waits until
it answers SIP OPTIONS, and stops it by PID. The dispatcher list can be changed at run time
(``dispatcher.reload`` over jsonrpcs) as long as the pools themselves stay the same.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from callpark.edge import rpc as jsonrpc
from callpark.edge.config import (
    COUNTER_GROUP,
    EDGE_COUNTERS,
    FLOOD_COUNTER,
    EdgeConfig,
    render_credentials_cfg,
    render_dispatcher_list,
    render_kamailio_cfg,
    render_tls_cfg,
)
from callpark.edge.routes import ROUTES_HTABLE
from callpark.edge.rpc import DispatcherTarget
from callpark.edge.sipping import options_ping, options_probe
from callpark.netutil import LOOPBACK, free_port, port_bindable
from callpark.procs import ManagedProcess, ProcessFailed, StopsOnExit, log_tail
from callpark.waiting import wait_until

__all__ = ["KAMAILIO", "Edge", "EdgeError", "check_config"]

log = logging.getLogger(__name__)

KAMAILIO = "/usr/sbin/kamailio"
_UNIX_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin


class EdgeError(RuntimeError):
    """The edge could not be configured, started or controlled."""


def _kamailio_binary(path: str | None) -> str:
    binary = path or shutil.which("kamailio") or KAMAILIO
    if not Path(binary).exists():
        raise EdgeError(f"kamailio not found at {binary}")
    return binary


def check_config(cfg_path: Path, *, kamailio: str | None = None, timeout: float = 20.0) -> str:
    """Run ``kamailio -c -f cfg_path`` and return its output.

    :raises EdgeError: when the check fails (the output is in the message).
    """
    proc = subprocess.run(
        [_kamailio_binary(kamailio), "-c", "-f", str(cfg_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise EdgeError(f"kamailio -c rejected {cfg_path} (status {proc.returncode}):\n{output}")
    return output


class Edge(StopsOnExit):
    """One Kamailio SIP edge on loopback, configured from an :class:`EdgeConfig`.

    Files in ``run_dir``: ``kamailio.cfg``, ``dispatcher.list``, ``kamailio.log``,
    ``kamailio.pid`` and the jsonrpcs socket ``rpc.sock`` (or a loopback UDP port when that
    path would be too long for a UNIX socket).
    """

    def __init__(
        self,
        config: EdgeConfig,
        run_dir: Path,
        *,
        kamailio: str | None = None,
        shm_mb: int = 32,
        pkg_mb: int = 4,
    ) -> None:
        self._config = config
        self.run_dir = run_dir.resolve()
        self.cfg_path = self.run_dir / "kamailio.cfg"
        self.dispatcher_path = self.run_dir / "dispatcher.list"
        self.credentials_path = self.run_dir / "credentials.cfg"
        """HA1 hashes for digest authentication (mode 0600; only written when auth is on)."""
        self.tls_path = self.run_dir / "tls.cfg"
        """The tls module's settings (only written when SIP over TLS is on)."""
        self.log_path = self.run_dir / "kamailio.log"
        self.pid_path = self.run_dir / "kamailio.pid"
        self._kamailio = kamailio
        self._shm_mb = shm_mb
        self._pkg_mb = pkg_mb
        self._proc: ManagedProcess | None = None
        sock = self.run_dir / "rpc.sock"
        if len(str(sock)) <= _UNIX_PATH_MAX:
            self.rpc_endpoint = str(sock)
        else:
            self.rpc_endpoint = f"udp:{LOOPBACK}:{free_port(udp_too=True)}"
        self.start_seconds: float | None = None
        # appended to the Server header: the readiness probe must hear this instance, not
        # another process that happens to hold the port
        self.instance = secrets.token_hex(4)

    # ----- files -------------------------------------------------------------------------

    @property
    def config(self) -> EdgeConfig:
        return self._config

    def write_files(self) -> None:
        """Render and write kamailio.cfg and dispatcher.list into the run directory."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_atomic(self.dispatcher_path, render_dispatcher_list(self._config))
        if self._config.auth is not None:
            self._write_atomic(self.credentials_path, render_credentials_cfg(self._config), mode=0o600)
        if self._config.tls is not None:
            self._write_atomic(self.tls_path, render_tls_cfg(self._config), mode=0o600)
        self._write_atomic(
            self.cfg_path,
            render_kamailio_cfg(
                self._config,
                dispatcher_list=self.dispatcher_path,
                rpc_socket=self.rpc_endpoint,
                instance=self.instance,
                credentials_file=self.credentials_path if self._config.auth is not None else None,
                tls_file=self.tls_path if self._config.tls is not None else None,
            ),
        )

    @staticmethod
    def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        tmp.replace(path)

    def check(self) -> str:
        """Write the files and validate them with ``kamailio -c``; returns kamailio's output."""
        self.write_files()
        return check_config(self.cfg_path, kamailio=self._kamailio)

    # ----- addresses ---------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return self._config.host, self._config.port

    @property
    def uri(self) -> str:
        """``sip:<host>:<port>`` of the edge (use it as outbound proxy / registrar)."""
        return f"sip:{self._config.host}:{self._config.port}"

    def park_uri(self, pool: str | None = None) -> str:
        """The park URI in the edge's domain (``park-<pool>`` for a specific pool)."""
        user = self._config.park_user if pool is None else f"{self._config.park_user}-{pool}"
        return f"sip:{user}@{self._config.domain}"

    # ----- lifecycle ---------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise EdgeError("edge not started")
        return self._proc.pid

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.is_running()

    def start(self, timeout: float = 15.0) -> float:
        """Write the config, start kamailio and wait until it answers OPTIONS.

        Returns the seconds from spawn to the first 200 reply (also in :attr:`start_seconds`).
        :raises EdgeError: if kamailio exits or does not answer within ``timeout``.
        """
        if self._proc is not None:
            raise EdgeError(f"edge already started (pid {self._proc.pid})")
        host, port = self.address
        # Kamailio binds UDP with SO_REUSEADDR, so a second instance would start on a taken
        # port and silently share it: check before spawning.
        if not port_bindable(port, host=host, tcp=self._config.tcp):
            raise EdgeError(f"{host}:{port} is already in use; not starting a second edge on it")
        tls = self._config.tls
        if tls is not None and not port_bindable(tls.port, host=host, udp=False):
            raise EdgeError(f"{host}:{tls.port} (TLS) is already in use; not starting a second edge on it")
        self.write_files()
        if not self.rpc_endpoint.startswith("udp:"):
            Path(self.rpc_endpoint).unlink(missing_ok=True)
        argv = [
            _kamailio_binary(self._kamailio),
            "-DD",  # stay in the foreground (the creator does not daemonize)
            "-E",  # log to stderr (captured in kamailio.log)
            "-f", str(self.cfg_path),
            "-m", str(self._shm_mb),
            "-M", str(self._pkg_mb),
            "-n", str(self._config.children),
            "-w", str(self.run_dir),
            "-Y", str(self.run_dir),
            "-P", str(self.pid_path),
        ]  # fmt: skip
        self._proc = ManagedProcess("kamailio-edge", argv, log_path=self.log_path, cwd=self.run_dir)
        began = time.monotonic()
        self._proc.start()

        def answered() -> bool:
            assert self._proc is not None
            self._proc.check_running()
            reply = options_probe(host, port, timeout=0.05)
            return reply is not None and reply.status_code == 200 and self.instance in (reply.header("Server") or "")

        try:
            wait_until(answered, timeout=timeout, what=f"kamailio edge on {host}:{port} to answer OPTIONS")
        except (ProcessFailed, TimeoutError) as exc:
            tail = self._proc.log_tail(40)
            self.stop()
            raise EdgeError(f"edge did not come up: {exc}\n--- kamailio.log ---\n{tail}") from exc
        self.start_seconds = time.monotonic() - began
        log.info("edge up on %s:%d in %.3fs (pid %d)", host, port, self.start_seconds, self._proc.pid)
        return self.start_seconds

    def stop(self, timeout: float = 5.0) -> None:
        """Stop kamailio by PID (SIGTERM, then SIGKILL of its process group). Idempotent."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        proc.stop(timeout=timeout)

    def ping(self, timeout: float = 0.5) -> int | None:
        """OPTIONS to the edge itself; the status code, or None without an answer."""
        return options_ping(*self.address, timeout=timeout)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> Edge:
        if self._proc is None:
            self.start()
        return self

    # ----- RPC ---------------------------------------------------------------------------

    def rpc(self, method: str, *params: Any, timeout: float = 2.0) -> Any:
        """Call a Kamailio RPC command (e.g. ``dispatcher.list``, ``ul.dump``)."""
        if not self.is_running():
            raise EdgeError("edge not running")
        return jsonrpc.call(self.rpc_endpoint, method, *params, timeout=timeout)

    def dispatcher_targets(self) -> list[DispatcherTarget]:
        """Every dispatcher destination with its state, as the running edge sees it."""
        return jsonrpc.parse_dispatcher_list(self.rpc("dispatcher.list"))

    def registrations(self) -> dict[str, list[str]]:
        """Registered AORs (user parts) and their contacts, from usrloc."""
        return jsonrpc.parse_ul_dump(self.rpc("ul.dump"))

    def flood_blocked(self) -> int:
        """Requests the flood limit (pike) dropped so far: kamailio counter ``callpark.flood_blocked``."""
        group, name = FLOOD_COUNTER
        return int(self.rpc("cnt.get", group, name))

    def routes(self) -> list[str]:
        """The rows of the live orbit routing table the edge holds (empty before the sidecar loaded one)."""

        def get(key: str) -> Any:
            try:
                return self.rpc("htable.get", ROUTES_HTABLE, key).get("item", {}).get("value")
            except jsonrpc.RpcError:
                return None

        gen = get("gen")
        count = get(f"n{gen}") if isinstance(gen, int) and gen > 0 else 0
        return [str(get(f"r{gen}.{i}")) for i in range(count if isinstance(count, int) else 0)]

    def counters(self) -> dict[str, int]:
        """Every refusal counter of the edge (:data:`~callpark.edge.config.EDGE_COUNTERS`) by name."""
        return {name: int(self.rpc("cnt.get", COUNTER_GROUP, name)) for name in EDGE_COUNTERS}

    def wait_node_state(self, node: str, *, active: bool, timeout: float = 5.0) -> float:
        """Wait until dispatcher destination ``node`` (host:port) is (in)active in every set.

        Returns the seconds waited.
        """
        began = time.monotonic()

        def reached() -> bool:
            states = [t.active for t in self.dispatcher_targets() if t.address == node]
            return bool(states) and all(s == active for s in states)

        state = "active" if active else "inactive"
        wait_until(reached, timeout=timeout, what=f"dispatcher destination {node} to be {state}")
        return time.monotonic() - began

    def set_node_state(self, pool: str, node: str, state: str) -> None:
        """Force dispatcher state of ``node`` (host:port) in ``pool``'s set: ``"a"`` active,
        ``"i"`` inactive, ``"d"`` disabled (e.g. a drain: no new requests, probes stop).
        ``"p"`` may be appended to a/i (probing). Lost on the next reload."""
        if state not in {"a", "i", "d", "t", "ap", "ip", "tp"}:
            raise EdgeError(f"unknown dispatcher state {state!r}")
        self.rpc("dispatcher.set_state", state, self._config.set_id(pool), f"sip:{node}")

    def set_pool_nodes(self, pool: str, nodes: tuple[str, ...], *, timeout: float = 5.0) -> None:
        """Replace ``pool``'s nodes and reload the dispatcher list without a restart."""
        self._config = self._config.with_nodes(pool, nodes)
        self._write_atomic(self.dispatcher_path, render_dispatcher_list(self._config))
        if self.is_running():
            self.reload_dispatcher(timeout=timeout)

    def reload_dispatcher(self, *, timeout: float = 5.0) -> None:
        """``dispatcher.reload``: re-read dispatcher.list. Retried while kamailio rate-limits
        reloads (``reload_delta`` = 1 s in the generated config)."""

        def reloaded() -> bool:
            self.rpc("dispatcher.reload")
            return True

        wait_until(reloaded, timeout=timeout, what="dispatcher.reload to be accepted", interval=0.1)
