"""Delay (and optionally drop) queued packets in user space: netem's job, without netem.

This machine's kernel has no ``sch_netem`` (``tc qdisc add ... netem`` says "Specified
qdisc kind is unknown"), but it has ``nfnetlink_queue``. iptables hands the packets of
a fault to an NFQUEUE (:meth:`Firewall.queue`); this module reads that queue over a raw
netlink socket and gives each packet its verdict later: ACCEPT after ``delay_s`` plus
seeded jitter, or DROP with ``loss``. The rule uses ``--queue-bypass``, so packets flow
normally whenever no delayer is attached. No library: the protocol is four structs.
"""

from __future__ import annotations

import errno
import heapq
import random
import socket
import struct
import threading
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQNL_CFG_CMD_BIND, NFQNL_CFG_CMD_UNBIND = 1, 2
NFQNL_COPY_META = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NF_DROP, NF_ACCEPT = 0, 1


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _message(msg: int, queue: int, attrs: bytes, seq: int, flags: int = NLM_F_REQUEST) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg, flags, seq, 0) + body


class Delayer:
    """Give every packet of NFQUEUE ``queue`` its verdict after a delay; drop some."""

    def __init__(self, queue: int, *, delay_s: float, jitter_s: float = 0.0, loss: float = 0.0, seed: int = 0) -> None:
        self.queue, self.delay_s, self.jitter_s, self.loss = queue, delay_s, jitter_s, loss
        self.rng = random.Random(seed)
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self.sock.settimeout(0.2)
        self.seq = 0
        self.delayed = 0
        self.dropped = 0
        self._pending: list[tuple[float, int, int]] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _send(self, msg: int, attrs: bytes, *, ack: bool = False) -> None:
        self.seq += 1
        self.sock.send(_message(msg, self.queue, attrs, self.seq, NLM_F_REQUEST | (NLM_F_ACK if ack else 0)))

    def start(self) -> Delayer:
        bind = struct.pack("=BBH", NFQNL_CFG_CMD_BIND, 0, socket.htons(socket.AF_INET))
        self._send(NFQNL_MSG_CONFIG, _attr(NFQA_CFG_CMD, bind), ack=True)
        self._expect_ack()
        params = struct.pack("!IB", 0xFFFF, NFQNL_COPY_META)
        self._send(NFQNL_MSG_CONFIG, _attr(NFQA_CFG_PARAMS, params), ack=True)
        self._expect_ack()
        for target in (self._receive, self._release):
            t = threading.Thread(target=target, name=f"nfqueue-{self.queue}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _expect_ack(self) -> None:
        data = self.sock.recv(65536)
        _length, kind = struct.unpack_from("=IH", data)
        if kind == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, 16)
            if error != 0:
                name = errno.errorcode.get(-error, str(error))
                raise OSError(-error, f"nfqueue {self.queue} config refused: {name}")

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if length < 16:
                    break
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    packet_id = self._packet_id(data[offset + 20 : offset + length])
                    if packet_id is not None:
                        self._schedule(packet_id)
                offset += (length + 3) & ~3

    @staticmethod
    def _packet_id(attrs: bytes) -> int | None:
        pos = 0
        while pos + 4 <= len(attrs):
            length, kind = struct.unpack_from("=HH", attrs, pos)
            if length < 4:
                return None
            if kind & 0x7FFF == NFQA_PACKET_HDR:
                return int(struct.unpack_from("!I", attrs, pos + 4)[0])
            pos += (length + 3) & ~3
        return None

    def _schedule(self, packet_id: int) -> None:
        verdict = NF_DROP if self.rng.random() < self.loss else NF_ACCEPT
        due = time.monotonic() + max(0.0, self.delay_s + self.rng.uniform(-self.jitter_s, self.jitter_s))
        with self._wake:
            heapq.heappush(self._pending, (due, packet_id, verdict))
            self._wake.notify()

    def _release(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._stop.is_set():
                    self._wake.wait(0.2)
                if not self._pending:
                    return
                due, packet_id, verdict = self._pending[0]
                wait = due - time.monotonic()
                if wait > 0 and not self._stop.is_set():
                    self._wake.wait(min(wait, 0.2))
                    continue
                heapq.heappop(self._pending)
            self._verdict(packet_id, verdict)

    def _verdict(self, packet_id: int, verdict: int) -> None:
        try:
            self._send(NFQNL_MSG_VERDICT, _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id)))
        except OSError:
            return
        if verdict == NF_DROP:
            self.dropped += 1
        else:
            self.delayed += 1

    def stop(self) -> None:
        """Release every held packet at once (ACCEPT), unbind and close."""
        with self._wake:
            self._pending = [(0.0, pid, v) for _, pid, v in self._pending]
            self._stop.set()
            self._wake.notify_all()
        for t in self._threads:
            t.join(timeout=5)
        try:
            unbind = struct.pack("=BBH", NFQNL_CFG_CMD_UNBIND, 0, socket.htons(socket.AF_INET))
            self._send(NFQNL_MSG_CONFIG, _attr(NFQA_CFG_CMD, unbind))
        except OSError:
            pass
        self.sock.close()
