"""Fuzz the SIP text the project parses itself (messages, URIs, name-addr, Replaces, SDP,
request users): a value or SipParseError, nothing else."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callpark.node.worker.calls import contact_text, park_answer_sdp
from callpark.node.worker.loop import orbit_of
from callpark.sip import message as sip
from tests.fuzz.budget import FUZZ

NAMES = [
    "From",
    "To",
    "f",
    "t",
    "Call-ID",
    "i",
    "Contact",
    "m",
    "CSeq",
    "Supported",
    "k",
    "Require",
    "Referred-By",
    "b",
    "Refer-To",
    "r",
    "Replaces",
    "Via",
]
atoms = st.sampled_from(
    [
        "sip:",
        "sips:",
        "<",
        ">",
        ";",
        "tag=",
        "@",
        ":",
        "?",
        "&",
        "=",
        '"',
        "\\",
        ",",
        " ",
        "to-tag=",
        "from-tag=",
        "early-only",
        "replaces",
        "Replaces=",
        "%",
        "[::1]",
        "5060",
        "a",
    ]
)
sipish = st.lists(atoms | st.text(max_size=4), max_size=12).map("".join)
start_lines = st.sampled_from(
    ["INVITE sip:park@h SIP/2.0", "SIP/2.0 200 OK", "REFER sip:7001@h SIP/2.0", "BYE x SIP/2.0"]
)


@st.composite
def messages(draw: st.DrawFn) -> str:
    headers = draw(st.lists(st.tuples(st.sampled_from(NAMES), sipish), max_size=6))
    eol = draw(st.sampled_from(["\r\n", "\n"]))
    lines = [draw(start_lines | st.text(max_size=20))] + [f"{n}: {v}" for n, v in headers]
    if draw(st.booleans()):
        lines.append(" folded" + draw(sipish))
    return eol.join(lines) + eol + eol + draw(st.text(max_size=40))


@FUZZ
@given(messages() | st.text(max_size=200))
def test_messages(raw: str) -> None:
    try:
        msg = sip.parse_message(raw)
    except sip.SipParseError:
        return
    for name in NAMES:
        msg.header_values(name)
    _ = (msg.method, msg.status_code, msg.cseq_method, msg.is_request)
    for fn in (sip.from_tag, sip.to_tag, sip.call_id, sip.supports_replaces, sip.referred_by_uri, sip.message_contact):
        fn(raw)
    tracker = sip.DialogTracker()
    tracker.observe(raw, sent=False)
    tracker.observe(raw, sent=True)
    _ = tracker.tags


@FUZZ
@given(sipish, sipish)
def test_uris_name_addrs_and_replaces(text: str, other: str) -> None:
    try:
        uri = sip.parse_sip_uri(text)
        str(uri), uri.param("park-id"), uri.uri_header("Replaces"), uri.with_header("Replaces", other)
    except sip.SipParseError:
        pass
    try:
        addr = sip.parse_name_addr(text)
        _ = addr.tag
    except sip.SipParseError:
        pass
    with contextlib.suppress(sip.SipParseError):
        sip.parse_replaces(text)
    with contextlib.suppress(sip.SipParseError):
        sip.refer_to_with_replaces(text, other)
    sip.split_list(text)
    sip.tag_of(text)
    assert isinstance(contact_text(text), str)


@FUZZ
@given(st.text(max_size=12) | st.text(alphabet="0123456789*#%2Aa3", max_size=10))
def test_request_users(user: str) -> None:
    orbit = orbit_of(user)
    assert orbit is None or orbit.lstrip("*#").isdigit()


sdp_lines = st.sampled_from(
    [
        "v=0",
        "o=- 1 1 IN IP4 h",
        "s=-",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
        "a=sendrecv",
        "a=recvonly",
        "a=inactive",
        "c=IN IP4 h",
        "",
    ]
)


@FUZZ
@given(st.lists(sdp_lines | st.text(max_size=8), max_size=10), st.sampled_from(["\r\n", "\n", ""]), st.text(max_size=6))
def test_sdp(lines: list[str], eol: str, orbit: str) -> None:
    sdp = "\r\n".join(lines) + eol
    answer = park_answer_sdp(sdp, orbit)
    assert answer is None or f"a=x-callpark-orbit:{orbit}\r\n" in answer
    assert isinstance(sip.sdp_with_ptime(sdp, 20), str)


def test_sdp_ending_in_the_t_line() -> None:
    answer = park_answer_sdp("v=0\r\nm=audio 1 RTP/AVP 0\r\na=sendonly\r\nt=0 0", "7001")
    assert answer is not None and answer.endswith("t=0 0\r\na=x-callpark-orbit:7001\r\n")


@pytest.mark.parametrize(
    ("user", "orbit"),
    [("7001", "7001"), ("%2A7001", "*7001"), ("%237001", "#7001"), ("*0123", None), ("0123", None), ("*100", None)],
)
def test_the_worker_reads_orbits_by_the_model_rules(user: str, orbit: str | None) -> None:
    """The worker once had its own looser orbit rule (leading zeros, ``*100``); now it is the model's."""
    assert orbit_of(user) == orbit
