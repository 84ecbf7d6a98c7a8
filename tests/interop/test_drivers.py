"""The interop drivers' pure parts: netstring framing, generated baresip config, SIPp scenario."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.interop.baresip import BaresipConfig, BaresipError, CtrlClient
from tests.interop.sipp import SCENARIOS


def test_netstring_frames_round_trip_and_partial_input_waits() -> None:
    first = CtrlClient.encode({"command": "dial", "params": "sip:park@127.0.0.1:5070", "token": "t1"})
    payload = b'{"command":"dial","params":"sip:park@127.0.0.1:5070","token":"t1"}'
    assert first == str(len(payload)).encode() + b":" + payload + b","
    second = CtrlClient.encode({"event": True, "type": "CALL_CLOSED"})
    buffer = bytearray(first + second[:10])
    assert CtrlClient.decode(buffer) == [{"command": "dial", "params": "sip:park@127.0.0.1:5070", "token": "t1"}]
    assert buffer == bytearray(second[:10])  # incomplete frame kept for the next read
    buffer += second[10:]
    assert CtrlClient.decode(buffer) == [{"event": True, "type": "CALL_CLOSED"}]
    assert buffer == bytearray()


def test_netstring_without_terminator_is_an_error() -> None:
    with pytest.raises(BaresipError):
        CtrlClient.decode(bytearray(b"2:{};"))


def test_baresip_config_is_headless_loopback_and_ausine_ready(tmp_path: Path) -> None:
    config = BaresipConfig(sip_port=5070, ctrl_port=5080, rtp_port=6000, rtp_range=10, answermode="auto")
    config.write(tmp_path)
    lines = dict(
        line.split(None, 1) for line in (tmp_path / "config").read_text().splitlines() if not line.startswith("module")
    )
    assert lines["sip_listen"].strip() == "127.0.0.1:5070"
    assert lines["net_interface"].strip() == "127.0.0.1"
    assert lines["ctrl_tcp_listen"].strip() == "127.0.0.1:5080"
    assert lines["rtp_ports"].strip() == "6000-6009"
    # ausine only runs at 48 kHz stereo
    assert (lines["audio_source"].strip(), lines["ausrc_srate"].strip(), lines["ausrc_channels"].strip()) == (
        "ausine,660",
        "48000",
        "2",
    )
    modules = (tmp_path / "config").read_text()
    assert "stdio.so" not in modules and "menu.so" in modules and "ctrl_tcp.so" in modules
    assert (tmp_path / "accounts").read_text() == (
        "<sip:bare@127.0.0.1:5070>;regint=0;answermode=auto;audio_codecs=PCMU/8000/1\n"
    )


def test_committed_sipp_scenarios_are_well_formed_xml() -> None:
    scenarios = sorted(SCENARIOS.glob("*.xml"))
    assert scenarios
    for path in scenarios:
        root = ET.parse(path).getroot()
        assert root.tag == "scenario" and root.get("name"), path
