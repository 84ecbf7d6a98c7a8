"""The node's pjsua2 worker processes and their channels.

:class:`WorkerPool` spawns the workers, runs one reader thread per worker generation,
restarts a worker that died and picks the worker with the most free call slots.

Threads and locks: ``handles`` is built once by :meth:`WorkerPool.start` and never
resized. Each handle's ``free_slots`` and ``ready`` are written by its reader thread
(``ready``/``slots`` messages) and by the supervisor loop when it respawns the worker;
no lock guards them (a stale read only picks a worse worker). ``ready`` is a new event per
worker process: the reader of a dead process clears only its own, even when its last handler
returns after the restarted worker said ready. ``reserved`` (slots promised to
takeovers in flight) changes under the pool's reservation lock only. Sends are thread-safe
(:class:`~callpark.node.protocol.Channel`).
"""

from __future__ import annotations

import functools
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callpark.netutil import free_port, free_port_block
from callpark.node.config import MAX_CALLS_PER_WORKER, RTP_PORTS_PER_WORKER
from callpark.node.context import NodeContext, NodePart
from callpark.node.protocol import Channel, ChannelClosed, Message
from callpark.peers import TrustedPeers
from callpark.procs import ManagedProcess
from callpark.waiting import wait_until

log = logging.getLogger(__name__)

SLOW_HANDLER_S = 0.5  # a worker message handled slower than this delays that worker's next requests


@dataclass
class WorkerHandle:
    """One worker process as the supervisor sees it."""

    index: int
    sip_port: int
    rtp_port: int
    process: ManagedProcess | None = None
    channel: Channel | None = None
    free_slots: int = 0
    ready: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False
    generation: int = 0
    reserved: int = 0  # slots promised to takeovers in flight (released on their takeover_result)

    @property
    def room(self) -> int:
        """Free slots not promised to a takeover in flight."""
        return self.free_slots - self.reserved

    def sip(self, host: str) -> str:
        return f"{host}:{self.sip_port}"

    def send(self, op: str, **fields: Any) -> bool:
        """Send one message; False when the worker is gone (never raises)."""
        if self.channel is None:
            return False
        try:
            self.channel.send(op, **fields)
            return True
        except ChannelClosed:
            return False


class WorkerPool(NodePart):
    """Spawns, reads, restarts and picks the node's workers.

    ``on_message`` gets every message but ``ready`` and ``slots`` (handled here), on the
    worker's reader thread; ``music_path`` is asked for the WAV a (re)spawned worker plays.
    """

    def __init__(
        self,
        ctx: NodeContext,
        trusted: TrustedPeers,
        *,
        on_message: Callable[[WorkerHandle, Message], None],
        music_path: Callable[[], Path | None],
    ) -> None:
        super().__init__(ctx)
        self.trusted = trusted
        self.on_message = on_message
        self.music_path = music_path
        self.handles: list[WorkerHandle] = []
        self._reserve_lock = threading.Lock()

    def start(self) -> None:
        """Spawn every worker, then wait until each one is ready."""
        for index in range(self.config.workers):
            sip = self.config.sip_port_base + index if self.config.sip_port_base else free_port(udp_too=True)
            rtp = (
                self.config.rtp_port_base + index * RTP_PORTS_PER_WORKER
                if self.config.rtp_port_base
                else free_port_block(RTP_PORTS_PER_WORKER)
            )
            handle = WorkerHandle(index, sip, rtp)
            self.handles.append(handle)
            self.spawn(handle)
        for handle in self.handles:
            wait_until(functools.partial(self.is_ready, handle), timeout=20, what=f"worker {handle.index} ready")

    def stop(self) -> None:
        """Ask every worker to shut down (they hang up their calls), then stop the processes."""
        for handle in self.handles:
            handle.stopping = True
            handle.send("shutdown")
        deadline = time.monotonic() + 5
        for handle in self.handles:
            if handle.process is not None:
                while handle.process.is_running() and time.monotonic() < deadline:
                    time.sleep(0.02)
                handle.process.stop(timeout=2)
            if handle.channel is not None:
                handle.channel.close()

    def is_ready(self, handle: WorkerHandle) -> bool:
        """True once ``handle`` said ``ready``; raises if its process died meanwhile."""
        if handle.process is not None:
            handle.process.check_running()
        return handle.ready.is_set()

    def ready_count(self) -> int:
        return sum(1 for w in self.handles if w.ready.is_set())

    def get(self, index: int) -> WorkerHandle | None:
        """The worker with this index, None when there is none."""
        return self.handles[index] if 0 <= index < len(self.handles) else None

    def pick(self, need: int, exclude: int | None = None, *, reserve: bool = False) -> WorkerHandle | None:
        """The ready worker with the most room, if it has ``need`` plus one spare.

        ``reserve`` (takeovers): the slot is promised at once, under the lock, until
        :meth:`release` on the worker's ``takeover_result``, so several takeovers in one
        cycle spread over the workers instead of all going to the one that looked emptiest.
        """
        with self._reserve_lock:
            ready = [w for w in self.handles if w.ready.is_set() and w.index != exclude]
            best = max(ready, key=lambda w: w.room, default=None)
            if best is None or best.room < need + 1:
                return None
            if reserve:
                best.reserved += 1
            return best

    def release(self, handle: WorkerHandle) -> None:
        """A reserved slot's takeover ended (held, refused or failed)."""
        with self._reserve_lock:
            handle.reserved = max(0, handle.reserved - 1)

    def broadcast(self, op: str, **fields: Any) -> None:
        for handle in self.handles:
            handle.send(op, **fields)

    def check(self, on_restarted: Callable[[WorkerHandle], None]) -> None:
        """Restart every worker that died; ``on_restarted`` then moves its calls back in."""
        for handle in self.handles:
            if handle.stopping or handle.process is None or handle.process.is_running():
                continue
            code = handle.process.returncode()
            log.warning("worker %d died (exit %s); restarting it and taking its calls over", handle.index, code)
            self.metrics.worker_restarts.labels(str(self.me)).inc()
            handle.process.stop()
            if handle.channel is not None:
                handle.channel.close()
            self.spawn(handle)
            try:
                wait_until(functools.partial(self.is_ready, handle), timeout=20, what="restarted worker")
            except Exception as exc:  # noqa: BLE001 - retried on the next cycle
                log.error("worker %d did not come back: %s", handle.index, exc)
                continue
            on_restarted(handle)

    def spawn(self, handle: WorkerHandle) -> None:
        """Start (again) the worker process of ``handle`` and its reader thread."""
        parent, child = socket.socketpair()
        handle.generation += 1
        # a new event per process: the reader of the dead one may still be in a handler and
        # clears only its own (it used to clear this one after the new worker said ready)
        handle.ready = threading.Event()
        handle.free_slots = 0
        handle.reserved = 0  # takeovers sent to the dead process will not answer
        handle.channel = Channel(parent)
        log_path = self.config.run_dir / f"worker{handle.index}.log"
        handle.process = ManagedProcess(
            f"{self.config.name}/worker{handle.index}",
            self._argv(handle, child.fileno()),
            log_path=log_path,
            pass_fds=[child.fileno()],
        ).start()
        child.close()
        generation = handle.generation
        threading.Thread(
            target=self._read, args=(handle, generation), name=f"worker{handle.index}-reader", daemon=True
        ).start()

    def _argv(self, handle: WorkerHandle, fd: int) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "callpark.node.worker",
            "--fd",
            str(fd),
            "--index",
            str(handle.index),
            "--node",
            self.config.name,
            "--host",
            self.config.host,
            "--sip-port",
            str(handle.sip_port),
            "--rtp-port",
            str(handle.rtp_port),
            "--domain",
            self.config.domain,
            "--log-level",
            self.config.worker_log_level,
            "--trusted-peers",
            str(self.trusted),
        ]
        if self.config.edge:
            argv += ["--proxy", self.config.edge]
        music = self.music_path()
        if music is not None:
            argv += ["--music", str(music)]
        return argv

    def _read(self, handle: WorkerHandle, generation: int) -> None:
        channel, ready = handle.channel, handle.ready  # this generation's: a respawn replaces both
        assert channel is not None
        while True:
            try:
                msg = channel.receive()
            except ChannelClosed:
                break
            if handle.generation != generation:
                break
            msg["generation"] = generation  # a reply to a process that died meanwhile is dropped
            started = time.monotonic()
            try:
                self._handle(handle, msg)
                took = time.monotonic() - started
                if took > SLOW_HANDLER_S:
                    log.warning("handling %s from worker %d took %.2fs", msg.get("op"), handle.index, took)
            except Exception:
                log.exception(
                    "handling %s from worker %d failed; please report it as a BUG", msg.get("op"), handle.index
                )
        ready.clear()

    def _handle(self, w: WorkerHandle, msg: Message) -> None:
        op = msg["op"]
        if op == "ready":
            w.free_slots = int(msg.get("slots", MAX_CALLS_PER_WORKER))
            w.ready.set()
        elif op == "slots":
            w.free_slots = int(msg["free"])
            self.metrics.slots_free.labels(str(self.me), str(w.index)).set(w.free_slots)
        else:
            self.on_message(w, msg)
