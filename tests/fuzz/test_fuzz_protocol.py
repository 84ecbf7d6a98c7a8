"""Fuzz the supervisor <-> worker JSON lines: a message dict or ChannelClosed, nothing else."""

from __future__ import annotations

import json
import socket

from hypothesis import given
from hypothesis import strategies as st

from callpark.node.protocol import MAX_LINE, Channel, ChannelClosed
from tests.fuzz.budget import FUZZ, json_values


def receive(line: bytes) -> dict[str, object] | None:
    a, b = socket.socketpair()
    channel = Channel(b)
    try:
        a.sendall(line)
        a.shutdown(socket.SHUT_WR)
        try:
            return channel.receive()
        except ChannelClosed as exc:
            assert "\n" not in str(exc)
            return None
    finally:
        a.close()
        channel.close()


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.sampled_from(["op", "req", "orbit", "dialog"]), json_values).map(
            lambda d: json.dumps(d).encode()
        ),
    )
)
def test_receive_gives_a_message_or_channel_closed(line: bytes) -> None:
    msg = receive(line.replace(b"\n", b" ") + b"\n")
    assert msg is None or isinstance(msg.get("op"), str)


def test_hostile_lines() -> None:
    assert receive(b"\xff\xfe{}\n") is None  # not UTF-8
    assert receive(b"[" * (MAX_LINE - 10) + b"\n") is None  # deep nesting
    assert receive(b"x" * (MAX_LINE + 10) + b"\n") is None  # too long
    assert receive(b'{"op": "ready"}\n') == {"op": "ready"}
