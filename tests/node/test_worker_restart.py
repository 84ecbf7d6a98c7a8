"""A worker that dies while the node still handles its last message comes back ready (real
pjsua2 worker processes; the handler is held by the test, so the window is forced, not hoped for).

The cause of an intermittent failure of tests/node/test_restart.py: the node's handler of the
worker's last message waited on etcd (a blip, or the fail-fast window after it) while the worker
was SIGKILLed and restarted. When that handler returned, the dead worker's reader thread ended
by clearing the *restarted* worker's ready flag: the node saw no worker ready, never took the
call over (it waited for a slot) and logged nothing after "worker 0 died".
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import cast

from callpark.node.config import NodeConfig
from callpark.node.context import NodeContext
from callpark.node.metrics import NodeMetrics
from callpark.node.protocol import Message
from callpark.node.workers import WorkerHandle, WorkerPool
from callpark.store.kv import KV
from callpark.store.parking import ParkTable
from callpark.store.records import NodeId, RecordDecoder
from callpark.waiting import wait_until

POOL = "pool-a"


def test_a_worker_restarted_while_the_dead_ones_handler_runs_stays_ready(tmp_path: Path) -> None:
    in_handler, release = threading.Event(), threading.Event()

    def on_message(w: WorkerHandle, msg: Message) -> None:
        if msg["op"] == "ringback_result" and not in_handler.is_set():
            in_handler.set()  # the dead worker's last message: its handler waits (as on etcd)
            release.wait(60)

    config = NodeConfig(pool=POOL, name="n1", run_dir=tmp_path, domain="example.test", workers=1)
    metrics = NodeMetrics(POOL, "n1")
    ctx = NodeContext(
        config,
        cast(KV, None),  # the pool never touches etcd
        cast(ParkTable, None),
        metrics,
        RecordDecoder(metrics.registry),
        lambda: True,
        NodeId(POOL, "n1", "i1"),
    )
    pool = WorkerPool(ctx, config.peers(), on_message=on_message, music_path=lambda: None)
    try:
        pool.start()
        handle = pool.handles[0]
        assert handle.process is not None
        old_readers = [t for t in threading.enumerate() if t.name == "worker0-reader"]
        handle.send("ringback", orbit="7000", parker_uri="sip:parker@example.test")  # answered "not held here"
        assert in_handler.wait(10)
        os.kill(handle.process.pid, signal.SIGKILL)
        wait_until(lambda: not handle.process.is_running(), timeout=10, what="the worker to die")  # type: ignore[union-attr]
        restarted: list[WorkerHandle] = []
        pool.check(on_restarted=restarted.append)  # respawns and waits until the new worker is ready
        assert restarted == [handle] and handle.ready.is_set()
        release.set()  # the dead worker's handler returns; its reader thread ends
        for thread in old_readers:
            thread.join(10)
            assert not thread.is_alive()
        assert handle.ready.is_set(), "the dead worker's reader cleared the restarted worker's ready flag"
        assert pool.pick(need=1) is handle
    finally:
        release.set()
        pool.stop()
