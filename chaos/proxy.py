"""A TCP proxy between one node and etcd that can swallow etcd's answers (unknown outcomes).

The node's etcd endpoints point at this proxy (one listener per etcd member). Normally it
forwards bytes both ways. While *swallowing*, it still forwards everything the node sends,
so etcd receives and applies the node's requests, but it drops every HTTP/2 frame of a
request stream that etcd sends back (response headers, data, trailers). Connection-level
frames (stream 0: SETTINGS, PING, WINDOW_UPDATE, GOAWAY) still pass, so the gRPC channel
stays up, new connections complete their handshake and every request the node sends in
the window really reaches etcd; the node waits out its request time-out and sees
``DEADLINE_EXCEEDED``: the outcome of each write is unknown to it, while etcd has applied
it. :meth:`release` then resets every connection (RST), so requests still waiting fail
with a lost connection (unknown outcome too), and passes bytes through again. Dropped
response headers leave the node's HPACK state out of step with etcd's, which is why the
connections are reset rather than resumed.

Plaintext gRPC only (the chaos cluster's etcd runs without TLS inside its namespace).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

FRAME_HEADER = 9
HEADERS = 0x1


@dataclass
class ProxyStats:
    """What the proxy did since it started (counters only grow)."""

    connections: int = 0
    swallowed_frames: int = 0  # stream frames from etcd dropped while swallowing
    swallowed_answers: int = 0  # of which response HEADERS frames (one or two per answer)
    resets: int = 0  # connections reset by release()


class _Link:
    """One proxied connection: node side and etcd side."""

    def __init__(self, node: socket.socket, etcd: socket.socket) -> None:
        self.node, self.etcd = node, etcd
        self.closed = False

    def reset(self) -> None:
        """Close both sides; the node side with an RST (SO_LINGER 0)."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self.node.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        for s in (self.node, self.etcd):
            with contextlib.suppress(OSError):
                s.close()


class AnswerSwallower:
    """Listeners on ``host`` that forward to ``targets`` (etcd members' host, port)."""

    def __init__(self, host: str, targets: Sequence[tuple[str, int]]) -> None:
        self.host = host
        self.targets = list(targets)
        self.stats = ProxyStats()
        self.ports: list[int] = []
        self._swallowing = False
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._listeners: list[socket.socket] = []
        self._stopped = threading.Event()

    @property
    def swallowing(self) -> bool:
        return self._swallowing

    def start(self) -> AnswerSwallower:
        for target in self.targets:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, 0))
            sock.listen(16)
            self._listeners.append(sock)
            self.ports.append(int(sock.getsockname()[1]))
            threading.Thread(target=self._accept, args=(sock, target), daemon=True, name="proxy-accept").start()
        return self

    def endpoints(self) -> str:
        """The node's ``--etcd`` value: one URL per member, through this proxy."""
        return ",".join(f"http://{self.host}:{p}" for p in self.ports)

    def swallow(self) -> None:
        """From now on, etcd's answers to requests are dropped (the requests still go through)."""
        with self._lock:
            self._swallowing = True

    def release(self) -> int:
        """Reset every connection and pass answers again; returns how many were reset."""
        with self._lock:
            self._swallowing = False
            links, self._links = self._links, []
        for link in links:
            if not link.closed:
                self.stats.resets += 1
            link.reset()
        return len(links)

    def close(self) -> None:
        self._stopped.set()
        for sock in self._listeners:
            with contextlib.suppress(OSError):
                sock.close()
        self.release()

    def _accept(self, listener: socket.socket, target: tuple[str, int]) -> None:
        while not self._stopped.is_set():
            try:
                node, _ = listener.accept()
            except OSError:
                return
            try:
                etcd = socket.create_connection(target, timeout=2.0)
                etcd.settimeout(None)
            except OSError:
                node.close()  # like a refused connection: the node tries another member
                continue
            for s in (node, etcd):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(node, etcd)
            with self._lock:
                self._links.append(link)
                self.stats.connections += 1
            threading.Thread(target=self._requests, args=(link,), daemon=True, name="proxy-up").start()
            threading.Thread(target=self._answers, args=(link,), daemon=True, name="proxy-down").start()

    @staticmethod
    def _requests(link: _Link) -> None:
        """Node to etcd: every byte, always."""
        try:
            while data := link.node.recv(65536):
                link.etcd.sendall(data)
        except OSError:
            pass
        link.reset()

    def _answers(self, link: _Link) -> None:
        """etcd to node, frame by frame: stream frames are dropped while swallowing."""
        buf = b""
        try:
            while data := link.etcd.recv(65536):
                buf += data
                out, buf = self._filter(buf)
                if out:
                    link.node.sendall(out)
        except OSError:
            pass
        link.reset()

    def _filter(self, buf: bytes) -> tuple[bytes, bytes]:
        """Split ``buf`` into whole frames to forward and the incomplete rest."""
        out = bytearray()
        while len(buf) >= FRAME_HEADER:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < FRAME_HEADER + length:
                break
            frame, buf = buf[: FRAME_HEADER + length], buf[FRAME_HEADER + length :]
            stream = int.from_bytes(frame[5:9], "big") & 0x7FFFFFFF
            if stream and self._swallowing:
                self.stats.swallowed_frames += 1
                self.stats.swallowed_answers += frame[3] == HEADERS
                continue
            out += frame
        return bytes(out), buf
