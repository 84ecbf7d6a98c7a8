"""The park node worker: SIP calls and music on hold, decisions from the supervisor.

One process, one pjsua2 endpoint (pjsua is a singleton), at most four calls. All
pjsua2 work happens on the main thread inside the pump; a reader thread queues the
supervisor's messages and wakes the pump. The worker never talks to etcd and never
decides on its own whether a call is parked: it asks (``park``/``retrieve``), keeps
pumping, and acts on the ``reply``.

- :mod:`callpark.node.worker.loop`: the loop and the dispatch of messages and INVITEs;
- :mod:`callpark.node.worker.calls`: the calls (answer, connect, hand over, bridge,
  ringback, takeover);
- :mod:`callpark.node.worker.music`: music on hold.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import sys
from typing import Any

from callpark.node.protocol import Channel
from callpark.node.worker.loop import Worker, orbit_of
from callpark.sip.call import event_message


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="callpark.node.worker")
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--node", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--sip-port", type=int, required=True)
    p.add_argument("--rtp-port", type=int, required=True)
    p.add_argument("--proxy")
    p.add_argument("--domain", default="callpark.test")
    p.add_argument("--music")
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--trusted-peers", default="127.0.0.0/8,::1/128", help="comma-separated addresses/networks")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format=f"%(asctime)s %(levelname)s worker{args.index}: %(message)s",
        stream=sys.stderr,
    )
    channel = Channel(socket.socket(fileno=args.fd))
    worker = Worker(args, channel)

    def on_term(signum: int, frame: Any) -> None:
        worker.pump.interrupt()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    code = worker.run()
    with contextlib.suppress(OSError):
        channel.close()
    return code


__all__ = ["event_message", "main", "orbit_of"]
