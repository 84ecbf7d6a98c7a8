"""The spoken orbit heard by a SIPp attended parker (issue #15 interop).

SIPp (``tests/interop/scenarios/attended_parker_listens.xml``) calls the park number through
the real Kamailio edge in front of a real node (real etcd), offering one G.711 codec with
an SDP that points the audio at a UDP socket this test owns (PCMA first, then PCMU: nodes
speak PCMU only). The test decodes the RTP the
node sends there (:mod:`tests.g711`, per payload type) and reads the orbit back with the
same matcher as the pjsua2 test (:mod:`tests.spoken`): it must be the orbit of the 200 OK,
and the announcement of another orbit must match worse. Then SIPp hangs up (a parker that
does not complete the transfer), which frees the orbit as abandoned.
"""

from __future__ import annotations

import socket
import time

import pytest

from callpark.model import prompts
from callpark.netutil import LOOPBACK
from callpark.store import prompts as promptstore
from callpark.waiting import timeout_multiplier, wait_until
from tests.g711 import PCMA, PCMU, TABLES, decode, rtp_parts, wav_of_rtp
from tests.interop.sipp import SIPP, SippRun
from tests.node.conftest import ParkLab
from tests.spoken import FRAME, RATE, _best_lag, features, samples_of, spoken_orbit

RECORD_S = 5.0  # the lead-in, "parked on" and four digits take about 3.5 s
NO_RINGBACK = "00:05:00"  # no ringback may hand the call over while the test listens


def test_g711_tables_match_the_itu_reference_values() -> None:
    u, a = TABLES[PCMU], TABLES[PCMA]
    assert (u[0x00], u[0x80], u[0xFF], u[0x7F], u[0x7E]) == (-32124, 32124, 0, 0, -8)
    assert (a[0xD5], a[0x55], a[0x2A], a[0xAA], a[0x80]) == (8, -8, -32256, 32256, 5504)
    # both laws are monotonic within each sign half
    assert sorted(u[0x80:0x100], reverse=True) == u[0x80:0x100]
    assert decode(PCMA, b"\xd5\x55") == [8, -8]
    packet = bytes([0x80, PCMA, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4]) + b"\xd5"
    assert rtp_parts(packet) == (PCMA, 160, b"\xd5")


def collect_rtp(sock: socket.socket, seconds: float, deadline_s: float) -> list[bytes]:
    """RTP packets from ``sock`` until they carry ``seconds`` of audio (or the deadline passes)."""
    packets: list[bytes] = []
    audio = 0
    deadline = time.monotonic() + deadline_s * timeout_multiplier()
    sock.settimeout(0.2)
    while audio < seconds * RATE and time.monotonic() < deadline:
        try:
            data, _ = sock.recvfrom(2048)
        except TimeoutError:
            continue
        packets.append(data)
        payload_type, _, payload = rtp_parts(data)
        if payload_type in TABLES:
            audio += len(payload)
    return packets


def announcement_match(wav: bytes, orbit: str) -> float:
    """How well the whole rendered announcement of ``orbit`` matches the recording."""
    heard = features(samples_of(wav))
    expected = features(samples_of(prompts.render(prompts.announcement(orbit), promptstore.shipped())))
    lead = round(prompts.LEAD_IN_S * RATE / FRAME)
    return _best_lag(heard, expected, range(-lead, max(1, len(heard) - len(expected))))[1]


@pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")
def test_a_sipp_attended_parker_hears_the_orbit_of_its_park(lab: ParkLab) -> None:
    lab.configure(timeout=NO_RINGBACK)
    lab.node(edge=True)
    lab.start_edge()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
        rtp.bind((LOOPBACK, 0))
        listen_ms = int((RECORD_S + 5) * 1000 * timeout_multiplier())
        extra = ["-d", str(listen_ms), "-key", "rtp_port", str(rtp.getsockname()[1])]
        sipp = SippRun("attended_parker_listens.xml", lab.root / "sipp", remote=lab.edge_address, extra=extra)
        try:
            sipp.start()
            orbit = wait_until(lambda: sipp.logged("orbit"), timeout=10, what="SIPp parked (see its traces)")
            record = lab.parked()[orbit]
            assert record["park_id"] == sipp.logged("park_id"), record
            packets = collect_rtp(rtp, RECORD_S, deadline_s=RECORD_S + 5)
            wav, types = wav_of_rtp(packets)
            # SIPp offered PCMA first, then PCMU: the node speaks PCMU only (callpark/sip/endpoint.py)
            assert PCMU in types and PCMA not in types, types
            said, match = spoken_orbit(wav, len(orbit), promptstore.shipped())
            assert match > 0.7, f"'parked on' not found in the RTP (match {match:.2f})"
            assert said == orbit == "7000", (said, orbit)
            # negative check: the announcement of any other orbit fits the audio worse
            mine = announcement_match(wav, orbit)
            for other in ("7001", "7009", "7100"):
                assert announcement_match(wav, other) < mine - 0.05, (other, mine)
            code = sipp.wait_exit(timeout=listen_ms / 1000 + 15)
            assert code == 0, sipp.diagnostics()
            assert lab.wait_outcome(record["park_id"]) == "abandoned"
        finally:
            sipp.stop()
