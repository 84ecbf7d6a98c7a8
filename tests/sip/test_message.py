"""Pure SIP text helpers: real pjsip messages, edge cases and properties."""

from __future__ import annotations

import string
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callpark.sip.message import (
    DialogTags,
    DialogTracker,
    Replaces,
    SipParseError,
    call_id,
    contact_uri,
    from_tag,
    header_value,
    header_values,
    message_contact,
    parse_datagram,
    parse_message,
    parse_name_addr,
    parse_replaces,
    parse_sip_uri,
    refer_to_with_replaces,
    referred_by_uri,
    replaces_value,
    sdp_with_ptime,
    split_list,
    supports_replaces,
    tag_of,
    to_tag,
    unescape_orbit_user,
)

# Captured from pjsua2 2.15.1 (callpark phones on loopback).
INVITE = (
    "INVITE sip:bob@127.0.0.1:51457 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:57467;rport;branch=z9hG4bKPjiKhzzTC5GuVsQTrnVmsCVyHGJMt0ePnX\r\n"
    "Max-Forwards: 70\r\n"
    "From: sip:alice@127.0.0.1;tag=QtVlZ10Coz7dZyC51kJyATfWb6Mq0leD\r\n"
    "To: sip:bob@127.0.0.1\r\n"
    "Contact: <sip:alice@127.0.0.1:57467;ob>\r\n"
    "Call-ID: CKlUze-2w6VUGhj8kkwwAU4W4OR4GieU\r\n"
    "CSeq: 801 INVITE\r\n"
    "Allow: PRACK, INVITE, ACK, BYE, CANCEL, UPDATE, INFO, SUBSCRIBE, NOTIFY, REFER, MESSAGE, OPTIONS\r\n"
    "Supported: replaces, 100rel, timer, norefersub\r\n"
    "Referred-By: <sip:parker@127.0.0.1>\r\n"
    "X-Test: 1\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length:   12\r\n"
    "\r\n"
    "v=0\r\no=- 1\r\n"
)
OK_200 = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:57467;rport=57467;received=127.0.0.1;branch=z9hG4bKPjiKhzz\r\n"
    "Call-ID: CKlUze-2w6VUGhj8kkwwAU4W4OR4GieU\r\n"
    "From: <sip:alice@127.0.0.1>;tag=QtVlZ10Coz7dZyC51kJyATfWb6Mq0leD\r\n"
    "To: <sip:bob@127.0.0.1>;tag=w8zYI24zQ7GKqfQWaLbQINrLEJ9W6FBt\r\n"
    "CSeq: 801 INVITE\r\n"
    "Contact: <sip:bob@127.0.0.1:51457>\r\n"
    "Supported: 100rel, timer\r\n"
    "Require: timer\r\n"
    "X-Callpark-Orbit: 7001\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)
ALICE_TAG = "QtVlZ10Coz7dZyC51kJyATfWb6Mq0leD"
BOB_TAG = "w8zYI24zQ7GKqfQWaLbQINrLEJ9W6FBt"
CID = "CKlUze-2w6VUGhj8kkwwAU4W4OR4GieU"


def test_parse_real_invite() -> None:
    msg = parse_message(INVITE)
    assert msg.is_request and msg.method == "INVITE" and msg.status_code is None
    assert not msg.is_response and msg.request_uri == "sip:bob@127.0.0.1:51457" and msg.reason == ""
    assert msg.cseq_method == "INVITE"
    assert msg.body == "v=0\r\no=- 1\r\n"
    assert header_value(INVITE, "x-test") == "1"
    assert header_value(INVITE, "Content-Length") == "12"
    assert from_tag(INVITE) == ALICE_TAG  # bare addr-spec: params after ';' are header params
    assert to_tag(INVITE) is None
    assert call_id(INVITE) == CID
    assert supports_replaces(INVITE)
    assert referred_by_uri(INVITE) == "sip:parker@127.0.0.1"
    assert "REFER" in header_values(INVITE, "Allow")
    contact = message_contact(INVITE)
    assert contact is not None and contact.port == 57467 and contact.param("ob") == ""


def test_parse_real_200() -> None:
    msg = parse_message(OK_200)
    assert not msg.is_request and msg.status_code == 200 and msg.cseq_method == "INVITE"
    assert msg.is_response and msg.reason == "OK" and msg.request_uri is None and msg.method is None
    assert from_tag(OK_200) == ALICE_TAG and to_tag(OK_200) == BOB_TAG
    assert not supports_replaces(OK_200)
    assert header_value(OK_200, "X-Callpark-Orbit") == "7001"
    assert referred_by_uri(OK_200) is None


def test_compact_forms_folding_and_lf_only() -> None:
    raw = (
        "MESSAGE sip:b@h SIP/2.0\n"
        'f: "A, B" <sip:a@h:5070>;tag=x1\n'
        "t: <sip:b@h>\n"
        "i: abc@h\n"
        "k: timer,\n"
        "  replaces\n"
        "m: <sip:a@h:5070;transport=udp>;expires=60, <sip:a2@h>\n"
        "\n"
        "hello"
    )
    msg = parse_message(raw)
    assert msg.header("From") == '"A, B" <sip:a@h:5070>;tag=x1'
    assert from_tag(raw) == "x1" and call_id(raw) == "abc@h"
    assert supports_replaces(raw)
    assert msg.header_values("Contact") == ["<sip:a@h:5070;transport=udp>;expires=60", "<sip:a2@h>"]
    assert msg.body == "hello"


def test_require_replaces_counts() -> None:
    raw = "INVITE sip:x@h SIP/2.0\r\nRequire: Replaces\r\nCall-ID: 1\r\n\r\n"
    assert supports_replaces(raw)


def test_malformed_messages() -> None:
    with pytest.raises(SipParseError):
        parse_message("")
    with pytest.raises(SipParseError):
        parse_message("INVITE sip:a@b SIP/2.0\r\nno colon here\r\n\r\n")


def test_parse_datagram_response_with_compact_and_folded_headers() -> None:
    data = (
        b"SIP/2.0 302 Moved Temporarily\r\n"
        b"v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
        b"i: abc@x\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"m: <sip:7001@127.0.0.1:5071>\r\n"
        b"X-Long: one\r\n two\r\n"
        b"Record-Route: <sip:a;lr>\r\nRecord-Route: <sip:b;lr>\r\n"
        b"Content-Length: 2\r\n\r\nhi"
    )
    msg = parse_datagram(data)
    assert msg.is_response and msg.status_code == 302 and msg.reason == "Moved Temporarily"
    assert msg.cseq_method == "INVITE"
    assert msg.header("Call-ID") == "abc@x"
    assert msg.header("contact") == "<sip:7001@127.0.0.1:5071>"
    assert msg.header("X-Long") == "one two"
    assert msg.header_values("Record-Route") == ["<sip:a;lr>", "<sip:b;lr>"]
    assert msg.body == "hi"


@pytest.mark.parametrize("data", [b"", b"\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n", b"\xff\xfe SIP/2.0\r\n\r\n"])
def test_parse_datagram_rejects_what_is_not_sip(data: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_datagram(data)


def test_parse_datagram_replaces_undecodable_bytes() -> None:
    msg = parse_datagram(b"MESSAGE sip:a@h SIP/2.0\r\nX-Bin: \xff\r\n\r\n")
    assert msg.request_uri == "sip:a@h" and msg.header("X-Bin") == "\ufffd"


@pytest.mark.parametrize(
    ("user", "orbit"), [("%2A150", "*150"), ("%2a150", "*150"), ("%23150", "#150"), ("7001", "7001"), ("park", "park")]
)
def test_unescape_orbit_user(user: str, orbit: str) -> None:
    assert unescape_orbit_user(user) == orbit


def test_name_addr_variants() -> None:
    na = parse_name_addr('"Bob \\"B\\" <x>" <sip:bob@h:5062;ob>;tag=t1;expires=3')
    assert na.display_name == 'Bob "B" <x>' and na.uri == "sip:bob@h:5062;ob"
    assert na.tag == "t1" and na.param("expires") == "3"
    assert parse_name_addr("sip:a@h;tag=z").tag == "z"
    assert parse_name_addr("<sip:a@h>").tag is None
    assert tag_of(None) is None and tag_of("<sip:a@h>;tag=") is None
    with pytest.raises(SipParseError):
        parse_name_addr("<sip:a@h")


def test_sip_uri_parse() -> None:
    uri = parse_sip_uri("sip:park@127.0.0.1:5063;transport=udp;lr?Subject=x&Replaces=a%3Bb")
    assert (uri.user, uri.host, uri.port) == ("park", "127.0.0.1", 5063)
    assert uri.param("transport") == "udp" and uri.param("lr") == ""
    assert uri.uri_header("replaces") == "a;b"
    assert str(uri.without_headers()) == "sip:park@127.0.0.1:5063;transport=udp;lr"
    v6 = parse_sip_uri("<sips:[::1]:5061>")
    assert v6.host == "[::1]" and v6.port == 5061 and v6.scheme == "sips" and v6.user is None
    for bad in ("tel:+1555", "sip:", "sip:a@h:99999", "http://x"):
        with pytest.raises(SipParseError):
            parse_sip_uri(bad)


def test_contact_uri_keeps_port() -> None:
    assert contact_uri("<sip:alice@127.0.0.1:57467;ob>").port == 57467
    assert contact_uri('"A" <sip:a@h:1>;+sip.instance="<urn:uuid:1>", <sip:b@h:2>').port == 1
    with pytest.raises(SipParseError):
        contact_uri("")


def test_replaces_value_and_refer_to() -> None:
    value = replaces_value(CID, to_tag=BOB_TAG, from_tag=ALICE_TAG)
    assert value == f"{CID};to-tag={BOB_TAG};from-tag={ALICE_TAG}"
    refer_to = refer_to_with_replaces("<sip:bob@127.0.0.1:51457;ob>", value)
    assert refer_to.startswith("<sip:bob@127.0.0.1:51457;ob?Replaces=") and refer_to.endswith(">")
    assert ";" not in refer_to.split("?", 1)[1]  # escaped
    back = parse_name_addr(refer_to).sip_uri().uri_header("Replaces")
    assert back == value
    assert parse_replaces(value) == Replaces(CID, BOB_TAG, ALICE_TAG)
    assert parse_replaces(value + ";early-only").early_only
    with pytest.raises(ValueError):
        replaces_value(CID, to_tag="", from_tag="x")
    with pytest.raises(SipParseError):
        parse_replaces(f"{CID};to-tag=x")


def test_dialog_tracker_both_sides() -> None:
    caller = DialogTracker()
    callee = DialogTracker()
    caller.observe(INVITE, sent=True)
    callee.observe(INVITE, sent=False)
    assert caller.tags is None and callee.tags is None  # no To tag yet
    callee.observe(OK_200, sent=True)
    caller.observe(OK_200, sent=False)
    assert caller.tags == DialogTags(CID, ALICE_TAG, BOB_TAG)
    assert callee.tags == DialogTags(CID, BOB_TAG, ALICE_TAG)
    assert caller.remote_contact == "<sip:bob@127.0.0.1:51457>"
    assert callee.remote_contact == "<sip:alice@127.0.0.1:57467;ob>"
    assert callee.remote_supports_replaces is True and callee.remote_referred_by == "sip:parker@127.0.0.1"
    assert caller.remote_supports_replaces is False
    # The Replaces a third party sends to bob for alice's dialog: to-tag = bob's tag.
    assert caller.tags is not None
    assert caller.tags.replaces_for_peer() == Replaces(CID, to_tag=BOB_TAG, from_tag=ALICE_TAG)


def test_in_dialog_request_from_peer_keeps_tags() -> None:
    caller = DialogTracker()
    caller.observe(INVITE, sent=True)
    caller.observe(OK_200, sent=False)
    bye = (
        "BYE sip:alice@127.0.0.1:57467 SIP/2.0\r\n"
        f"From: <sip:bob@127.0.0.1>;tag={BOB_TAG}\r\n"
        f"To: <sip:alice@127.0.0.1>;tag={ALICE_TAG}\r\n"
        f"Call-ID: {CID}\r\nCSeq: 5 BYE\r\n\r\n"
    )
    caller.observe(bye, sent=False)
    assert caller.tags == DialogTags(CID, ALICE_TAG, BOB_TAG)
    assert caller.observe("garbage", sent=False) is None


def test_sdp_with_ptime() -> None:
    sdp = "v=0\r\nm=audio 4000 RTP/AVP 0\r\na=ptime:20\r\na=sendonly\r\nm=video 0 RTP/AVP 96\r\n"
    out = sdp_with_ptime(sdp, 40)
    assert out == "v=0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\na=ptime:40\r\nm=video 0 RTP/AVP 96\r\n"
    assert sdp_with_ptime("v=0\nm=audio 1 RTP/AVP 0", 40) == "v=0\nm=audio 1 RTP/AVP 0\na=ptime:40"


# --------------------------------------------------------------------------- properties

TOKEN = string.ascii_letters + string.digits + "-.!%*_+`'~"
tokens = st.text(alphabet=TOKEN, min_size=1, max_size=40)
call_ids = st.builds(
    lambda a, b: f"{a}@{b}" if b else a,
    tokens,
    st.one_of(st.just(""), st.text(alphabet=string.ascii_lowercase + ".", min_size=1, max_size=10)),
)
users = st.text(alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=16)
ports = st.integers(min_value=1, max_value=65535)
hosts = st.sampled_from(["127.0.0.1", "example.org", "[::1]", "pbx-1.site.example"])


@given(call_ids, tokens, tokens, st.booleans())
def test_replaces_roundtrip(cid: str, to: str, frm: str, early: bool) -> None:
    value = replaces_value(cid, to_tag=to, from_tag=frm, early_only=early)
    assert parse_replaces(value) == Replaces(cid, to, frm, early)


@given(
    users, hosts, ports, st.lists(st.sampled_from(["ob", "transport=udp", "lr"]), max_size=3), call_ids, tokens, tokens
)
def test_refer_to_roundtrip_keeps_contact(
    user: str, host: str, port: int, params: list[str], cid: str, to: str, frm: str
) -> None:
    contact = f"<sip:{user}@{host}:{port}{''.join(';' + p for p in params)}>;expires=300"
    value = replaces_value(cid, to_tag=to, from_tag=frm)
    refer_to = refer_to_with_replaces(contact, value)
    uri = parse_name_addr(refer_to).sip_uri()
    assert (uri.user, uri.host, uri.port) == (user, host, port)
    assert [k for k, _ in uri.params] == [p.split("=")[0] for p in params]
    assert uri.uri_header("Replaces") == value
    assert unquote(refer_to.split("Replaces=", 1)[1].rstrip(">")) == value


@given(
    users,
    hosts,
    st.one_of(st.none(), ports),
    st.lists(st.tuples(st.sampled_from(["ob", "lr", "transport", "user"]), st.one_of(st.none(), tokens)), max_size=3),
)
def test_sip_uri_str_roundtrip(user: str, host: str, port: int | None, params: list[tuple[str, str | None]]) -> None:
    text = f"sip:{user}@{host}" + (f":{port}" if port else "")
    text += "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)
    uri = parse_sip_uri(text)
    assert str(uri) == text
    assert parse_sip_uri(str(uri)) == uri


@given(
    st.sampled_from(["From", "from", "FROM", "f"]),
    users,
    hosts,
    tokens,
    st.one_of(st.none(), st.text(alphabet=string.ascii_letters + " ,;", max_size=12)),
)
def test_from_tag_any_spelling(name: str, user: str, host: str, tag: str, display: str | None) -> None:
    quoted = f'"{display}" ' if display is not None else ""
    raw = f"OPTIONS sip:x@h SIP/2.0\r\n{name}: {quoted}<sip:{user}@{host}>;tag={tag};x=1\r\nCall-ID: c\r\n\r\n"
    assert from_tag(raw) == tag


@given(
    st.lists(st.sampled_from(["timer", "100rel", "replaces", "norefersub", "path"]), max_size=5),
    st.sampled_from(["Supported", "supported", "k", "Require"]),
)
def test_supports_replaces_property(options: list[str], name: str) -> None:
    raw = f"INVITE sip:x@h SIP/2.0\r\n{name}: {', '.join(options)}\r\nCall-ID: c\r\n\r\n"
    assert supports_replaces(raw) == ("replaces" in options)


@given(st.lists(st.text(alphabet=string.ascii_letters + '"<>;:@ ', min_size=1, max_size=15), min_size=1, max_size=5))
def test_split_list_never_splits_inside_quotes(parts: list[str]) -> None:
    quoted = [f'"{p.replace(chr(34), "")},x" <sip:a@h>' for p in parts]
    assert split_list(", ".join(quoted)) == quoted


@given(call_ids, tokens, tokens, users, users, ports, ports)
def test_tracker_sides_mirror(cid: str, tag_a: str, tag_b: str, ua: str, ub: str, pa: int, pb: int) -> None:
    invite = (
        f"INVITE sip:{ub}@h:{pb} SIP/2.0\r\nFrom: <sip:{ua}@h>;tag={tag_a}\r\nTo: <sip:{ub}@h>\r\n"
        f"Call-ID: {cid}\r\nCSeq: 1 INVITE\r\nContact: <sip:{ua}@h:{pa}>\r\n\r\n"
    )
    ok = (
        f"SIP/2.0 200 OK\r\nFrom: <sip:{ua}@h>;tag={tag_a}\r\nTo: <sip:{ub}@h>;tag={tag_b}\r\n"
        f"Call-ID: {cid}\r\nCSeq: 1 INVITE\r\nContact: <sip:{ub}@h:{pb}>\r\n\r\n"
    )
    a, b = DialogTracker(), DialogTracker()
    a.observe(invite, sent=True)
    b.observe(invite, sent=False)
    b.observe(ok, sent=True)
    a.observe(ok, sent=False)
    assert a.tags == DialogTags(cid, tag_a, tag_b)
    assert b.tags == DialogTags(cid, tag_b, tag_a)
    assert a.remote_contact is not None and contact_uri(a.remote_contact).port == pb
    assert b.remote_contact is not None and contact_uri(b.remote_contact).port == pa
