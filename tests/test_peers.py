"""Trusted-peer lists: parsing (with properties), membership, the edge host added by nodes."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callpark.errors import ValidationError
from callpark.peers import DEFAULT_TRUSTED_PEERS, TrustedPeers, host_of, is_ip, parse_peers

v4_networks = st.builds(
    lambda addr, prefix: ipaddress.IPv4Network((addr, prefix), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
v6_networks = st.builds(
    lambda addr, prefix: ipaddress.IPv6Network((addr, prefix), strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)
networks = st.one_of(v4_networks, v6_networks)


@given(st.lists(networks, min_size=1, max_size=20))
def test_a_written_list_parses_back_to_the_same_networks(nets: list[ipaddress.IPv4Network]) -> None:
    text = ",".join(str(n) for n in nets)
    parsed = parse_peers(text)
    assert list(parsed) == list(dict.fromkeys(nets))
    assert parse_peers([str(n) for n in nets]) == parsed


@given(st.text(max_size=60))
def test_any_text_parses_or_fails_with_one_line_naming_the_rule(text: str) -> None:
    try:
        parse_peers(text)
    except ValidationError as exc:
        assert exc.rule == "trusted-peers"
        assert "\n" not in str(exc)


@given(networks, st.integers(0, 2**32 - 1))
def test_membership_agrees_with_ipaddress(net: ipaddress.IPv4Network, raw: int) -> None:
    peers = TrustedPeers((net,))
    ip = ipaddress.IPv4Address(raw)
    assert peers.allows(f"{ip}:5060") == (net.version == 4 and ip in net)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("10.0.0.5/8", "'10.0.0.5/8'"),
        ("127.0.0.1/33", "'127.0.0.1/33'"),
        ("10.0.0.0/8,nope", "'nope'"),
        ("10.0.0.0/8,,", "empty entry"),
        ("  ", "at least one"),
        ("example.com", "'example.com'"),
    ],
)
def test_bad_entries_are_named(text: str, named: str) -> None:
    with pytest.raises(ValidationError, match="trusted-peers") as info:
        parse_peers(text, where="--trusted-peers")
    assert named in str(info.value) and "--trusted-peers" in str(info.value)


def test_defaults_trust_loopback_only_and_nodes_add_their_edge() -> None:
    peers = TrustedPeers.parse(DEFAULT_TRUSTED_PEERS)
    assert peers.allows("127.0.0.1:5060") and peers.allows("127.0.0.2") and peers.allows("[::1]:5060")
    assert not peers.allows("10.0.0.5:5060")
    assert not peers.allows("garbage")
    with_edge = peers.with_host("10.0.0.5:5070")
    assert with_edge.allows("10.0.0.5:1234") and not with_edge.allows("10.0.0.6:5070")
    assert peers.with_host("edge.example.com:5060") == peers  # a name cannot be matched: unchanged
    assert peers.with_host(None) == peers


def test_ipv4_mapped_ipv6_sources_match_ipv4_networks() -> None:
    assert TrustedPeers.parse("10.0.0.0/8").allows("[::ffff:10.1.2.3]:5060")


def test_host_of_and_is_ip() -> None:
    assert host_of("10.0.0.1:5060") == "10.0.0.1"
    assert host_of("[::1]:5060") == "::1"
    assert host_of("::1") == "::1"
    assert host_of("10.0.0.1") == "10.0.0.1"
    assert is_ip("::1") and is_ip("10.0.0.1") and not is_ip("10.0.0.1, 1.2.3.4") and not is_ip("")


def test_a_node_trusts_only_its_edge_by_default_and_loopback_without_one(tmp_path: Path) -> None:
    from callpark.node.config import NodeConfig

    lone = NodeConfig(pool="p", name="n", run_dir=tmp_path).validate()
    assert lone.peers().allows("127.0.0.5:5060") and not lone.peers().allows("10.0.0.1:5060")
    fronted = NodeConfig(pool="p", name="n", run_dir=tmp_path, edge="127.0.0.1:5070").resolved().validate()
    assert fronted.peers().allows("127.0.0.1:5070") and not fronted.peers().allows("127.0.0.2:5060")
    assert fronted.is_edge("127.0.0.1:5070") and not fronted.is_edge("127.0.0.1:5071")
    listed = NodeConfig(pool="p", name="n", run_dir=tmp_path, edge="127.0.0.1:5070", trusted_peers=("10.0.0.0/8",))
    assert listed.peers().allows("10.1.2.3:5060") and listed.peers().allows("127.0.0.1:5070")
    assert not listed.peers().allows("127.0.0.2:5060")
    named = NodeConfig(pool="p", name="n", run_dir=tmp_path, edge="localhost:5070").resolved()
    assert named.peers().allows("127.0.0.1:5070") and named.is_edge("127.0.0.1:5070")
