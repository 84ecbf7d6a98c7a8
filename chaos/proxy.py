"""A TCP proxy between one node and etcd that can swallow etcd's answers to writes (unknown outcomes).

The node's etcd endpoints point at this proxy (one listener per etcd member). Normally it
forwards bytes both ways. While *swallowing*, it still forwards everything the node sends,
so etcd receives and applies the node's requests, but it drops etcd's whole answer (headers,
data, trailers) to every write (``KV/Txn``, ``KV/Put``, ``KV/DeleteRange``). Answers to reads
and lease keepalives still pass, so the node stays a live member and keeps serving and
writing: each write waits out its request time-out (``DEADLINE_EXCEEDED``), its outcome is
unknown to the node while etcd has applied it, and the node must read it back. Writes are
told apart by the request's ``:path``, so the proxy decodes HTTP/2 header blocks (HPACK) both
ways; etcd's answers are decoded with etcd's compression state and encoded again with the
proxy's own toward the node, so dropping some header blocks leaves both sides consistent.
Connection-level frames (stream 0: SETTINGS, PING, WINDOW_UPDATE, GOAWAY) always pass.
:meth:`release` resets every connection (RST), so writes still waiting fail with a lost
connection (unknown outcome too), and answers pass again.

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

import hpack

log = logging.getLogger(__name__)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = 9
DATA, HEADERS, RST_STREAM, CONTINUATION = 0x0, 0x1, 0x3, 0x9
END_STREAM, END_HEADERS, PADDED, PRIORITY = 0x1, 0x4, 0x8, 0x20
MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE's default; gRPC clients keep it
WRITES = frozenset({"/etcdserverpb.KV/Txn", "/etcdserverpb.KV/Put", "/etcdserverpb.KV/DeleteRange"})


def _frames(buf: bytes) -> tuple[list[tuple[int, int, int, bytes]], bytes]:
    """Whole frames in ``buf`` as (type, flags, stream, payload), and the incomplete rest."""
    frames = []
    while len(buf) >= FRAME_HEADER:
        length = int.from_bytes(buf[:3], "big")
        if len(buf) < FRAME_HEADER + length:
            break
        kind, flags = buf[3], buf[4]
        stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        frames.append((kind, flags, stream, buf[FRAME_HEADER : FRAME_HEADER + length]))
        buf = buf[FRAME_HEADER + length :]
    return frames, buf


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def _fragment(kind: int, flags: int, payload: bytes) -> bytes:
    """The header block fragment of a HEADERS or CONTINUATION frame (padding and priority removed)."""
    if kind != HEADERS:
        return payload
    start, end = 0, len(payload)
    if flags & PADDED:
        start, end = 1, len(payload) - payload[0]
    if flags & PRIORITY:
        start += 5
    return payload[start:end]


def _headers(stream: int, block: bytes, end_stream: bool) -> bytes:
    """One header block as a HEADERS frame (plus CONTINUATIONs past the frame size)."""
    chunks = [block[i : i + MAX_FRAME] for i in range(0, len(block), MAX_FRAME)] or [b""]
    out = bytearray()
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        flags = (END_HEADERS if last else 0) | (END_STREAM if end_stream and i == 0 else 0)
        out += _frame(HEADERS if i == 0 else CONTINUATION, flags, stream, chunk)
    return bytes(out)


@dataclass
class ProxyStats:
    """What the proxy did since it started (counters only grow)."""

    connections: int = 0
    writes: int = 0  # write requests the node sent through the proxy
    swallowed_answers: int = 0  # answers to writes dropped while swallowing
    resets: int = 0  # connections reset by release()


class _Link:
    """One proxied connection: node side and etcd side."""

    def __init__(self, node: socket.socket, etcd: socket.socket) -> None:
        self.node, self.etcd = node, etcd
        self.closed = False
        self.paths: dict[int, str] = {}  # stream -> the request's :path
        self.swallowed: set[int] = set()  # streams whose answer is being dropped
        self.from_node = hpack.Decoder()  # the node's request compression state
        self.from_etcd = hpack.Decoder()  # etcd's answer compression state
        self.to_node = hpack.Encoder()  # ours, toward the node

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

    def _requests(self, link: _Link) -> None:
        """Node to etcd: every byte, always; header blocks are read for each stream's ``:path``."""
        buf, preface = b"", True
        blocks: dict[int, bytes] = {}
        try:
            while data := link.node.recv(65536):
                link.etcd.sendall(data)
                buf += data
                if preface:
                    if len(buf) < len(PREFACE):
                        continue
                    buf, preface = buf[len(PREFACE) :], False
                frames, buf = _frames(buf)
                for kind, flags, stream, payload in frames:
                    if kind not in (HEADERS, CONTINUATION):
                        continue
                    blocks[stream] = blocks.get(stream, b"") + _fragment(kind, flags, payload)
                    if flags & END_HEADERS:
                        headers = link.from_node.decode(blocks.pop(stream), raw=True)
                        path = next((bytes(v).decode() for k, v in headers if k == b":path"), "")
                        link.paths[stream] = path
                        self.stats.writes += path in WRITES
        except (OSError, hpack.HPACKError) as exc:
            log.debug("proxy: requests: %s", exc)
        link.reset()

    def _answers(self, link: _Link) -> None:
        """etcd to node, frame by frame: answers to writes are dropped while swallowing."""
        buf = b""
        blocks: dict[int, tuple[int, bytes]] = {}
        try:
            while data := link.etcd.recv(65536):
                buf += data
                frames, buf = _frames(buf)
                out = bytearray()
                for kind, flags, stream, payload in frames:
                    out += self._answer(link, blocks, kind, flags, stream, payload)
                if out:
                    link.node.sendall(out)
        except (OSError, hpack.HPACKError) as exc:
            log.debug("proxy: answers: %s", exc)
        link.reset()

    def _answer(
        self, link: _Link, blocks: dict[int, tuple[int, bytes]], kind: int, flags: int, stream: int, payload: bytes
    ) -> bytes:
        """What the node gets of one frame from etcd."""
        if stream == 0:
            return _frame(kind, flags, stream, payload)
        if stream not in link.swallowed and self._swallowing and link.paths.get(stream) in WRITES:
            link.swallowed.add(stream)
            self.stats.swallowed_answers += 1
        if kind in (HEADERS, CONTINUATION):
            first_flags, block = blocks.get(stream, (flags, b""))
            block += _fragment(kind, flags, payload)
            if not flags & END_HEADERS:
                blocks[stream] = (first_flags, block)
                return b""
            blocks.pop(stream, None)
            headers = link.from_etcd.decode(block, raw=True)  # always: keeps etcd's state in step
            if stream in link.swallowed:
                return b""
            return _headers(stream, link.to_node.encode(headers), bool(first_flags & END_STREAM))
        if stream in link.swallowed:
            return b""
        return _frame(kind, flags, stream, payload)
