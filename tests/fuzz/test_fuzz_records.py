"""Fuzz every etcd record parser: a typed record or StoreDataError, nothing else."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callpark.errors import StoreDataError
from callpark.store.kv import Entry
from callpark.store.records import (
    CallState,
    Dialog,
    Holder,
    Owner,
    ParkedCall,
    ParkKind,
    RecordDecoder,
    RecordKind,
    decode,
    parse_event,
    parse_history,
    parse_leader,
    parse_member,
    parse_request,
    parse_stamp,
    parse_state,
)
from callpark.store.schema import Keys
from tests.fuzz.budget import FUZZ, raw_values

CALL = ParkedCall(
    orbit="7001",
    park_id="0123456789abcdef",
    pool="pool-a",
    range="a-park",
    kind=ParkKind.BLIND,
    state=CallState.PARKED,
    holder=Holder("n1", 0, "127.0.0.1:5080"),
    dialog=Dialog("cid@h", "lt", "rt", "sip:alice@127.0.0.1:5090", "sip:alice@h", True),
    caller_uri="sip:alice@h",
    parker_uri="sip:bob@h",
    parked_at=1.0e9,
    deadline=1.0e9 + 90,
    attempts=0,
    owner_epoch=2,
)
MEMBER = {
    "v": 1,
    "node": "n1",
    "pool": "pool-a",
    "ready": True,
    "draining": False,
    "parked": 0,
    "workers": [{"index": 0, "sip": "127.0.0.1:5080", "free": 3}],
    "http": "127.0.0.1:1",
    "pid": 1,
}
HISTORY = {
    "v": 1,
    "park_id": "p1",
    "orbit": "7001",
    "outcome": "retrieved",
    "detail": "",
    "parked_at": 1.0,
    "ended_at": 2.0,
    "attempts": 0,
    "node": "n1",
}
CONFIG = {
    Keys.pool("pool-a"): {
        "v": 1,
        "name": "pool-a",
        "site": "site-a",
        "backup": None,
        "failback": "manual",
        "failback_hold_down_s": 120,
    },
    Keys.range("a-park"): {
        "v": 1,
        "name": "a-park",
        "start": "7000",
        "end": "7019",
        "pool": "pool-a",
        "type": "CallPark",
    },
    Keys.cps("global"): {
        "v": 1,
        "CallPickupTimeoutThreshold": "00:01:30",
        "EnableMusicOnHold": True,
        "MaxCallPickupAttempts": 1,
        "OnTimeoutURI": None,
    },
    Keys.moh_meta("pool-a"): {
        "v": 1,
        "pool": "pool-a",
        "sha256": "a" * 64,
        "size": 100,
        "chunks": 1,
        "sample_rate": 8000,
        "duration_s": 1.0,
        "filename": "x.wav",
    },
}

Parser = Callable[[str, bytes], Any]
TARGETS: dict[str, tuple[str, Parser, dict[str, Any], type]] = {
    "parked": (Keys.parked("7001"), ParkedCall.from_bytes, json.loads(CALL.to_bytes()), ParkedCall),
    "owner": (
        Keys.owner("a-park"),
        functools.partial(Owner.from_entry, mod_revision=5),
        {"v": 1, "range": "a-park", "pool": "pool-a", "epoch": 2, "reason": "initial"},
        Owner,
    ),
    "member": (Keys.member("pool-a", "n1"), parse_member, MEMBER, object),
    "request": (
        Keys.REQUESTS + "1-failover-pool-a",
        parse_request,
        {"v": 1, "action": "failover", "pool": "pool-a", "at": 1.0},
        object,
    ),
    "leader": (Keys.LEADER, parse_leader, {"name": "c1", "pid": 7, "since": 1.0}, dict),
    "event": (Keys.EVENTS + "1-abc", parse_event, {"v": 1, "at": 1.0, "kind": "failover"}, dict),
    "lru": (Keys.LRU + "7001", parse_stamp, {"at": 1.0}, object),
    "drain": (Keys.DRAIN + "pool-a/n1", parse_stamp, {"v": 1, "at": 1.0}, object),
    "history": (Keys.HISTORY + "p1", parse_history, HISTORY, object),
}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_valid_records_parse(name: str) -> None:
    key, parse, valid, kind = TARGETS[name]
    assert isinstance(parse(key, json.dumps(valid).encode()), kind)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_record_parsers_give_a_record_or_store_data_error(name: str) -> None:
    key, parse, valid, kind = TARGETS[name]

    @FUZZ
    @given(raw_values(valid))
    def check(raw: bytes) -> None:
        try:
            result = parse(key, raw)
        except StoreDataError as exc:
            assert exc.key == key and "\n" not in str(exc)
            return
        assert isinstance(result, kind)

    check()


@FUZZ
@given(raw_values(json.loads(CALL.to_bytes())))
def test_parked_records_round_trip(raw: bytes) -> None:
    try:
        call = ParkedCall.from_bytes(Keys.parked("7001"), raw)
    except StoreDataError:
        return
    assert ParkedCall.from_bytes(Keys.parked("7001"), call.to_bytes()) == call
    call.summary(now=1.0e9)  # what /api/parked shows never raises either


@FUZZ
@given(st.sampled_from(sorted(CONFIG)).flatmap(lambda k: st.tuples(st.just(k), raw_values(CONFIG[k]))))
def test_config_records_give_a_state_or_store_data_error(case: tuple[str, bytes]) -> None:
    key, raw = case
    entries = {k: json.dumps(v).encode() for k, v in CONFIG.items()} | {key: raw}
    try:
        state = parse_state(entries)
    except StoreDataError as exc:
        assert exc.key == key
        skipped: list[str] = []
        lenient = parse_state(entries, on_malformed=lambda k, e: skipped.append(k))
        assert skipped == [key] and len(lenient.pools) + len(lenient.ranges) + len(lenient.cps) + len(lenient.moh) == 3
        return
    for rng in state.ranges.values():  # what nodes compute from a range that parsed
        assert rng.size >= 1 and not rng.contains("not an orbit")
    for pool in state.pools:
        state.effective(pool)


@FUZZ
@given(st.binary(max_size=300))
def test_decode_gives_a_dict_or_store_data_error(raw: bytes) -> None:
    for legacy in (False, True):
        with contextlib.suppress(StoreDataError):
            assert isinstance(decode("k", raw, legacy_unversioned=legacy), dict)


@FUZZ
@given(st.lists(raw_values(MEMBER), min_size=1, max_size=5))
def test_the_decoder_never_raises_and_reports_each_key_revision_once(raws: list[bytes]) -> None:
    decoder = RecordDecoder()
    bad = 0
    for i, raw in enumerate(raws):
        entry = Entry(Keys.member("pool-a", f"n{i}"), raw, 1, 10 + i, 1)
        for _ in range(3):  # seen again on later scans: reported once
            result = decoder.decode(RecordKind.MEMBER, entry, parse_member)
        bad += result is None
    assert decoder.counts.get("member", 0) == bad


def test_an_owner_naming_an_invalid_pool_is_a_store_data_error() -> None:
    """Found by the fuzzer: validate_name's ValidationError escaped the owner parser."""
    with pytest.raises(StoreDataError, match="pool-name"):
        Owner.from_entry(Keys.owner(""), b'{"v":1,"range":"","pool":"","epoch":2}', 1)
