"""The key schema (one builder per key) and the writers that go through :func:`encode`."""

from __future__ import annotations

import json

import pytest

from callpark.errors import StoreDataError
from callpark.store.memkv import MemoryKV
from callpark.store.records import (
    SCHEMA_VERSION,
    decode,
    leader_bytes,
    member_bytes,
    parse_leader,
    parse_member,
    parse_request,
    parse_stamp,
    request_bytes,
    stamp_bytes,
)
from callpark.store.schema import Keys


@pytest.mark.parametrize(
    ("key", "spelt"),
    [
        (Keys.pool("a"), "/callpark/v1/config/pools/a"),
        (Keys.range("r"), "/callpark/v1/config/ranges/r"),
        (Keys.cps("global"), "/callpark/v1/config/cps/global"),
        (Keys.moh_meta("a"), "/callpark/v1/config/moh/a"),
        (Keys.moh_chunk("a", "f" * 4, 7), "/callpark/v1/blobs/moh/a/ffff/00007"),
        (Keys.prompt("a", "parked-on"), "/callpark/v1/blobs/prompts/a/parked-on"),
        (Keys.owner("r"), "/callpark/v1/owners/r"),
        (Keys.member("a", "n1"), "/callpark/v1/members/a/n1"),
        (Keys.event(12, "abc"), "/callpark/v1/events/00000000000000000012-abc"),
        (Keys.request(12, "failover", "a"), "/callpark/v1/requests/00000000000000000012-failover-a"),
        (Keys.drain("a", "n1"), "/callpark/v1/drain/a/n1"),
        (Keys.parked("7000"), "/callpark/v1/parked/7000"),
        (Keys.lru("7000"), "/callpark/v1/lru/7000"),
        (Keys.history("p1"), "/callpark/v1/history/p1"),
        (Keys.LEADER, "/callpark/v1/controller/leader"),
        (Keys.CONFIG_SERIAL, "/callpark/v1/config/serial"),
    ],
)
def test_every_key_keeps_its_spelling(key: str, spelt: str) -> None:
    """Keys are data in running clusters: a builder never changes what it spells."""
    assert key == spelt


def test_every_builder_stays_under_its_prefix() -> None:
    assert Keys.member("a", "n").startswith(Keys.pool_members("a")) and Keys.pool_members("a").startswith(Keys.MEMBERS)
    assert Keys.moh_chunk("a", "s", 0).startswith(Keys.moh_blob("a", "s"))
    assert Keys.moh_blob("a", "s").startswith(Keys.moh_pool_blobs("a"))
    assert Keys.prompt("a", "7").startswith(Keys.pool_prompts("a")) and Keys.pool_prompts("a").startswith(Keys.PROMPTS)
    assert Keys.event(1, "x") < Keys.event(2, "a"), "events sort by time"


@pytest.mark.parametrize(
    ("raw", "key", "parse"),
    [
        (member_bytes("a", "n1", {"ready": True, "draining": False}), Keys.member("a", "n1"), parse_member),
        (leader_bytes("c1", 42, 1.5), Keys.LEADER, parse_leader),
        (request_bytes("failover", "a", 1.0), Keys.request(1, "failover", "a"), parse_request),
        (stamp_bytes(1.0, via="http"), Keys.drain("a", "n1"), parse_stamp),
        (stamp_bytes(1.0), Keys.lru("7000"), parse_stamp),
    ],
)
def test_every_writer_stamps_the_schema_version(raw: bytes, key: str, parse: object) -> None:
    assert json.loads(raw)["v"] == SCHEMA_VERSION
    assert callable(parse)
    parse(key, raw)


def test_a_member_record_carries_its_name_pool_and_info() -> None:
    raw = member_bytes("a", "n1", {"ready": True, "workers": [{"sip": "127.0.0.1:5070", "free": 3}]})
    member = parse_member(Keys.member("a", "n1"), raw)
    assert (member.pool, member.node, member.ready, member.draining) == ("a", "n1", True, False)
    assert decode("k", raw)["node"] == "n1"


def test_a_leader_record_of_another_version_is_refused() -> None:
    raw = json.dumps({"v": SCHEMA_VERSION + 1, "name": "c1", "pid": 1}).encode()
    with pytest.raises(StoreDataError):
        parse_leader(Keys.LEADER, raw)


def test_the_first_unversioned_leader_and_drain_records_still_parse() -> None:
    assert parse_leader(Keys.LEADER, b'{"name": "c1", "pid": 7}')["name"] == "c1"
    assert parse_stamp(Keys.drain("a", "n1"), b'{"at": 3.0}').at == 3.0


def test_membership_and_leadership_write_versioned_records() -> None:
    from callpark.dr.leader import Leadership
    from callpark.node.membership import Membership
    from callpark.store.session import LeaseTimings

    kv = MemoryKV()
    member = Membership(kv, pool="a", node="n1", timings=LeaseTimings(ttl_s=4, keepalive_s=0.5, safety_s=1.0))
    member.join({"ready": False})
    leader = Leadership(kv, "c1", ttl_s=6, safety_s=1.5)
    assert leader.campaign()
    for key in (Keys.member("a", "n1"), Keys.LEADER):
        entry = kv.get(key)
        assert entry is not None and json.loads(entry.value)["v"] == SCHEMA_VERSION
