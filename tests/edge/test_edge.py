"""A real Kamailio edge on an ephemeral port, with SIPp stand-ins for park nodes and phones."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from callpark.edge import Edge, EdgeConfig, EdgeError, OrbitRange, PoolSpec, options_ping
from callpark.edge.rpc import RpcError
from callpark.netutil import LOOPBACK, free_port
from callpark.waiting import timeout_multiplier
from tests.edge.conftest import DOMAIN, Lab, needs_kamailio, needs_sipp, two_pool_config
from tests.edge.sipp import SippUas, register
from tests.edge.uac import Uac

pytestmark = [needs_kamailio, needs_sipp]


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_edge_starts_answers_options_and_stops_without_leftovers(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    node = lab.uas("a1")
    edge = lab.edge(two_pool_config((node.address,), ()))
    assert edge.start_seconds is not None
    with capsys.disabled():
        print(f"\n[edge] kamailio answered OPTIONS {edge.start_seconds * 1000:.0f} ms after spawn")
    assert edge.ping() == 200
    assert edge.pid_path.read_text().strip() == str(edge.pid)
    targets = edge.dispatcher_targets()
    assert [(t.set_id, t.address, t.active) for t in targets] == [(1, node.address, True)]
    with pytest.raises(RpcError):
        edge.rpc("no.such.command")
    pgid = edge.pid
    edge.stop()
    assert group_gone(pgid), "kamailio children survived stop()"
    assert options_ping(*edge.address, timeout=0.3) is None


def test_rpc_over_udp_when_the_run_dir_is_too_long_for_a_unix_socket(lab: Lab) -> None:
    deep = lab.root / ("d" * 60) / ("e" * 60)
    edge = lab.edge(two_pool_config(("127.0.0.1:9",), ()), run_dir=deep)
    assert edge.rpc_endpoint.startswith("udp:")
    assert [t.address for t in edge.dispatcher_targets()] == ["127.0.0.1:9"]


def test_registered_user_is_reached_through_the_edge(lab: Lab) -> None:
    alice = lab.uas("alice")
    edge = lab.edge(two_pool_config((), ()))
    register(edge.address, "alice", alice.port, lab.root)
    assert edge.registrations() == {"alice": [f"sip:alice@{LOOPBACK}:{alice.port}"]}
    with Uac(edge.address) as caller:
        call = caller.invite(f"sip:alice@{DOMAIN}")
        assert call.status == 200 and call.answered_by == "alice"
        assert call.bye_status == 200, "BYE did not follow the record-routed path"
        # a park node addresses the parker as pjsip prints it: edge address, no port
        msg = caller.message(f"sip:alice@{LOOPBACK}", "parked on 7001")
        assert msg.status == 200 and msg.answered_by == "alice"
        assert caller.invite(f"sip:bob@{DOMAIN}").status == 404
        assert caller.message(f"sip:bob@{LOOPBACK}").status == 404


def test_phones_get_ordinary_timers_not_the_short_node_timeout(lab: Lab) -> None:
    # node_timeout (1 s, the global fr_timer) is for first tries at park nodes only; a phone
    # that takes 1.5 s to answer a MESSAGE must still be reached
    slow = lab.uas("slowphone", extra_args=("-d", "1500"))
    edge = lab.edge(two_pool_config((), ()))
    register(edge.address, "slowphone", slow.port, lab.root)
    with Uac(edge.address) as node:
        msg = node.message(f"sip:slowphone@{LOOPBACK}", "parked on 7001", timeout=5)
        assert msg.status == 200 and msg.answered_by == "slowphone"
        assert msg.elapsed >= 1.4


def test_park_and_orbits_reach_their_pools(lab: Lab) -> None:
    a1, a2, b1 = lab.uas("a1"), lab.uas("a2"), lab.uas("b1")
    nodeless = PoolSpec(name="c")  # no nodes, no backup
    edge = lab.edge(two_pool_config((a1.address, a2.address), (b1.address,), extra_pools=(nodeless,)))
    with Uac(edge.address) as caller:
        assert caller.invite(edge.park_uri("c")).status == 503
        answered = set()
        for _ in range(4):
            call = caller.invite(edge.park_uri())
            assert call.status == 200 and call.bye_status == 200
            answered.add(call.answered_by)
        assert answered == {"a1", "a2"}, "round robin should use both primary nodes"
        assert caller.invite(f"sip:7001@{DOMAIN}").answered_by in {"a1", "a2"}
        assert caller.invite(f"sip:7999@{LOOPBACK}:{edge.config.port}").answered_by in {"a1", "a2"}
        assert caller.invite(edge.park_uri("b")).answered_by == "b1"
        assert caller.invite(f"sip:%2A150@{DOMAIN}").answered_by == "b1"
        assert caller.invite(f"sip:*199@{DOMAIN}").answered_by == "b1"
        for unknown in ("8000", "6999", "%2A200", "%23150", "70000"):
            call = caller.invite(f"sip:{unknown}@{DOMAIN}")
            assert call.status == 404, unknown
        assert caller.invite(f"sip:park-nosuchpool@{DOMAIN}").status == 404


def test_redirect_from_a_node_is_relayed_and_can_be_followed(lab: Lab) -> None:
    holder = lab.uas("holder")
    redirector = lab.uas("r1", scenario="redirect.xml", keys={"holder": holder.address})
    cfg = two_pool_config(
        (redirector.address,), (holder.address,), extra_ranges=(OrbitRange(start="500", end="599", pool="a"),)
    )
    edge = lab.edge(cfg)
    with Uac(edge.address) as caller:
        call = caller.invite(f"sip:550@{DOMAIN}")
        assert call.status == 302
        assert call.final is not None
        contact = call.final.header("Contact")
        assert contact == f"<sip:550@{holder.address}>"
        # the retriever follows the redirect through the edge: a foreign R-URI is relayed as is
        follow = caller.invite(contact.strip("<>"))
        assert follow.status == 200 and follow.answered_by == "holder" and follow.bye_status == 200


@contextlib.contextmanager
def primary_pool_killed(lab: Lab) -> Iterator[tuple[Edge, Uac, tuple[SippUas, SippUas], float]]:
    """Pool a (a1, a2, backup b) and pool b (b1) behind an edge; one park answered by pool a,
    then both of a's nodes killed. Yields the edge, the caller, a's nodes and the kill time."""
    a1, a2, b1 = lab.uas("a1"), lab.uas("a2"), lab.uas("b1")
    edge = lab.edge(two_pool_config((a1.address, a2.address), (b1.address,)))
    with Uac(edge.address) as caller:
        assert caller.invite(edge.park_uri()).answered_by in {"a1", "a2"}
        killed = time.monotonic()
        a1.proc.kill9()
        a2.proc.kill9()
        yield edge, caller, (a1, a2), killed


def test_probes_take_a_dead_primary_pool_out_and_bring_nodes_back(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    with primary_pool_killed(lab) as (edge, caller, (a1, a2), killed):
        # no traffic: only the OPTIONS probes can notice
        for node in (a1, a2):
            edge.wait_node_state(node.address, active=False, timeout=5)
        detected = time.monotonic() - killed
        began = time.monotonic()
        park = caller.invite(edge.park_uri())
        orbit = caller.invite(f"sip:7042@{DOMAIN}")
        direct = time.monotonic() - began
        with capsys.disabled():
            print(
                f"\n[edge failover] probes marked both primary nodes inactive {detected:.2f}s after the"
                f" kill; park + orbit then answered by the backup pool in {direct * 1000:.0f} ms"
            )
        assert park.answered_by == "b1" and orbit.answered_by == "b1"
        assert direct < 0.5, f"after detection requests must not wait for dead nodes ({direct:.2f}s)"
        assert detected < 3.0 * timeout_multiplier()

        # a primary node coming back on its address is probed active again and gets parks again
        revived = time.monotonic()
        lab.uas("a1-again", port=a1.port)
        edge.wait_node_state(a1.address, active=True, timeout=5)
        with capsys.disabled():
            print(f"[edge failback] revived node active again after {time.monotonic() - revived:.2f}s")
        assert caller.invite(edge.park_uri()).answered_by == "a1-again"


def test_requests_in_flight_fail_over_to_the_backup_pool(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    with primary_pool_killed(lab) as (edge, caller, _, killed):
        # sent before any probe noticed: node timeout on a dead node, ds_next_dst to the other
        # dead one, then the backup set, all inside the failure route
        park = caller.invite(edge.park_uri(), timeout=10)
        park_s = time.monotonic() - killed
        assert park.status == 200 and park.answered_by == "b1"
        orbit = caller.invite(f"sip:7042@{DOMAIN}", timeout=10)
        orbit_s = time.monotonic() - killed
        assert orbit.status == 200 and orbit.answered_by == "b1"
        with capsys.disabled():
            print(
                f"\n[edge failover] park sent right after the kill answered by the backup pool"
                f" {park_s:.2f}s after the kill (took {park.elapsed:.2f}s); next orbit call at"
                f" {orbit_s:.2f}s took {orbit.elapsed * 1000:.0f} ms"
            )
        budget = (2 * edge.config.timers.node_timeout_ms / 1000 + 1.0) * timeout_multiplier()
        assert park.elapsed < budget


def test_dispatcher_reload_changes_a_pool_without_restart(lab: Lab) -> None:
    a1, b1 = lab.uas("a1"), lab.uas("b1")
    edge = lab.edge(two_pool_config((a1.address,), (b1.address,)))
    pid = edge.pid
    a2 = lab.uas("a2")
    edge.set_pool_nodes("a", (a2.address,))
    assert [t.address for t in edge.dispatcher_targets() if t.set_id == 1] == [a2.address]
    with Uac(edge.address) as caller:
        assert caller.invite(edge.park_uri()).answered_by == "a2"
    edge.set_pool_nodes("a", (a1.address, a2.address))  # a second reload inside reload_delta
    assert sorted(t.address for t in edge.dispatcher_targets() if t.set_id == 1) == sorted([a1.address, a2.address])
    assert edge.pid == pid
    assert edge.dispatcher_path.read_text().count(" pool=a") == 2

    # a drained (disabled) node gets no new requests and the probes leave it disabled
    edge.set_node_state("a", a1.address, "d")
    with Uac(edge.address) as caller:
        assert {caller.invite(edge.park_uri()).answered_by for _ in range(3)} == {"a2"}
    assert [t.flags[0] for t in edge.dispatcher_targets() if t.address == a1.address] == ["D"]
    edge.set_node_state("a", a1.address, "a")
    edge.wait_node_state(a1.address, active=True, timeout=2)


def test_an_edge_refuses_a_port_another_edge_holds(lab: Lab, tmp_path: Path) -> None:
    # kamailio binds UDP with SO_REUSEADDR: without the pre-check a second instance would
    # start and silently share the port
    port = free_port(udp_too=True)
    cfg = EdgeConfig(port=port, domain=DOMAIN, pools=(PoolSpec(name="a"),))
    first = lab.edge(cfg, run_dir=tmp_path / "first")
    second = lab.edge(cfg, run_dir=tmp_path / "second", start=False)
    with pytest.raises(EdgeError, match="already in use"):
        second.start(timeout=5)
    assert not second.is_running()
    assert first.ping() == 200


def test_start_failure_reports_the_log_and_leaves_nothing(lab: Lab, tmp_path: Path) -> None:
    fake = tmp_path / "fake-kamailio"
    fake.write_text("#!/bin/sh\necho 'ERROR: cannot start (fake)' >&2\nexit 3\n")
    fake.chmod(0o755)
    edge = Edge(two_pool_config((), ()), tmp_path / "bad", kamailio=str(fake))
    with pytest.raises(EdgeError, match="did not come up") as info:
        edge.start(timeout=5)
    assert "cannot start (fake)" in str(info.value)
    assert not edge.is_running()
