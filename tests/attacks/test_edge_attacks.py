"""Attacks on the SIP edge, each refused with its SIP status and counted in a kamailio counter
(``callpark.*``, :data:`callpark.edge.config.EDGE_COUNTERS`), while a legitimate park, retrieve
and phone call go through the same edge. Real Kamailio, SIPp stand-ins for nodes and phones,
raw UDP attackers on their own loopback addresses; inside a private network namespace
(:mod:`tests.attacks.netns`, run by ``tests/attacks/test_suite.py``)."""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
from pathlib import Path

from callpark.edge import Edge, OrbitRange, PoolSpec
from callpark.edge.credentials import DigestAuth, ha1
from callpark.edge.sipping import new_tag
from callpark.procs import ManagedProcess
from tests.attacks.netns import VICTIM, inside_only, listener, outside_packets, received
from tests.edge.conftest import DOMAIN, Lab, needs_kamailio, needs_sipp, two_pool_config
from tests.edge.sipp import SIPP, SippUas, register
from tests.edge.uac import CallResult, Uac

PASSWORD = {"alice": "alice-pw-1234", "bob": "bob-pw-5678"}
AUTH = DigestAuth(DOMAIN, {user: ha1(user, DOMAIN, pw) for user, pw in PASSWORD.items()})


SCENARIOS = Path(__file__).parent / "scenarios"


def _sipp_attack(edge: Edge, scenario: str, log_dir: Path, *, host: str, **keys: str) -> None:
    """Run the SIPp attacker ``scenario`` (tests/attacks/scenarios) once from ``host`` against
    the edge; it exits 0 only when the edge answered as the scenario expects."""
    argv = [SIPP, f"{edge.address[0]}:{edge.address[1]}", "-sf", str(SCENARIOS / scenario), "-m", "1", "-nostdin"]
    argv += ["-i", host, "-timeout", "10s", "-timeout_error", "-trace_err"]
    argv += ["-error_file", str(log_dir / f"{scenario}.errors.log")]
    for key, value in keys.items():
        argv += ["-key", key, value]
    proc = ManagedProcess(f"sipp-{scenario}", argv, log_path=log_dir / f"{scenario}.log", cwd=log_dir)
    proc.start()
    try:
        code = proc.popen.wait(timeout=15)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        proc.stop(timeout=1.0)
    assert code == 0, f"SIPp attack {scenario} was not refused as expected (exit {code}):\n{proc.log_tail()}"


def _reason(result: CallResult) -> str:
    return "" if result.final is None else result.final.reason


def _delta(edge: Edge, before: dict[str, int]) -> dict[str, int]:
    """Counters that moved since ``before``."""
    return {k: v - before[k] for k, v in edge.counters().items() if v != before[k]}


def _counted(edge: Edge, before: dict[str, int], expected: dict[str, int]) -> None:
    """Exactly the counters of ``expected`` moved, each by at least its count (a request the
    attacker resent before the stateless refusal arrived, on a loaded machine, counts again)."""
    moved = _delta(edge, before)
    assert set(moved) == set(expected) and all(moved[k] >= n for k, n in expected.items()), moved


def _legitimate(lab: Lab, edge: Edge, carol: SippUas) -> None:
    """A park, a retrieve following the 302 to the holder, and a call to a registered phone, each
    with its in-dialog ACK and BYE through the edge."""
    with Uac(edge.address, host="127.0.0.1") as phone:
        park = phone.invite(f"sip:park@{DOMAIN}")
        assert park.status == 200 and park.answered_by == "a1" and park.bye_status == 200
        redirect = phone.invite(f"sip:550@{DOMAIN}")
        assert redirect.status == 302 and redirect.final is not None
        follow = phone.invite((redirect.final.header("Contact") or "").strip("<>"))
        assert follow.status == 200 and follow.answered_by == "holder" and follow.bye_status == 200
        call = phone.invite(f"sip:carol@{DOMAIN}")
        assert call.status == 200 and call.answered_by == "carol" and call.bye_status == 200


@needs_kamailio
@needs_sipp
@inside_only
def test_sip_attacks_on_an_edge_without_digest_are_refused_and_counted(lab: Lab) -> None:
    node, holder = lab.uas("a1"), lab.uas("holder")
    redirector = lab.uas("b1", scenario="redirect.xml", keys={"holder": holder.address})
    orbits = (OrbitRange(start="500", end="599", pool="b"),)
    extra = (PoolSpec(name="c", nodes=(holder.address,)),)
    config = two_pool_config((node.address,), (redirector.address,), extra_ranges=orbits, extra_pools=extra)
    edge = lab.edge(dataclasses.replace(config, register_peers=("127.0.0.1/32",)))
    carol = lab.uas("carol")
    register(edge.address, "carol", carol.port, lab.root)
    before, packets = edge.counters(), outside_packets()
    edge_route = ("Route", f"<sip:{edge.address[0]}:{edge.address[1]};lr>")
    with listener("127.0.0.5") as bystander, Uac(edge.address, host="127.0.0.2") as attacker:
        bystander_uri = f"sip:victim@127.0.0.5:{bystander.getsockname()[1]}"
        # 1. relay through the edge to an outside or unregistered address
        for uri in (f"sip:victim@{VICTIM}", bystander_uri):
            assert attacker.invite(uri).status == 404 and attacker.message(uri).status == 404, uri
        # 2. in-dialog bypass: a made-up To-tag and a Route to the edge, aimed outside, at a
        #    listener no phone registered, and at a registered phone
        for method in ("INVITE", "MESSAGE", "BYE"):
            for uri in (f"sip:victim@{VICTIM}", bystander_uri, f"sip:carol@127.0.0.1:{carol.port}"):
                result = attacker.request(method, uri, to_tag=new_tag(), headers=[edge_route])
                assert (result.status, _reason(result)) == (403, "Forbidden: no such dialog"), (method, uri)
        for uri in (f"sip:victim@{VICTIM}", bystander_uri):  # the same from a SIPp attacker
            _sipp_attack(edge, "indialog_bypass.xml", lab.root, host="127.0.0.4", target=uri)
        # 3. registration hijack: REGISTER as carol from an address outside register_peers
        with Uac(edge.address, user="carol", host="127.0.0.3") as hijacker:
            hijack = hijacker.register(f"sip:{DOMAIN}", call_id=secrets.token_hex(8), cseq=1)
            assert (hijack.status, _reason(hijack)) == (403, "Forbidden: registration needs authentication")
        assert edge.registrations() == {"carol": [f"sip:carol@127.0.0.1:{carol.port}"]}
        # 4. a forged X-Callpark-Source: removed, the node sees the real source
        spoofed = attacker.invite(f"sip:park@{DOMAIN}", headers=[("X-Callpark-Source", "127.0.0.9")])
        assert spoofed.final is not None and spoofed.final.header_values("X-Callpark-Source") == ["127.0.0.2"]
        _legitimate(lab, edge, carol)
        assert received(bystander) == []
    assert outside_packets() == packets
    _counted(edge, before, {"relay_denied": 4, "dialog_refused": 11, "register_refused": 1, "source_spoofed": 1})


@needs_kamailio
@needs_sipp
@inside_only
def test_registration_hijack_and_in_dialog_bypass_with_digest_auth_are_refused_and_counted(lab: Lab) -> None:
    node = lab.uas("a1")
    edge = lab.edge(dataclasses.replace(two_pool_config((node.address,), ()), auth=AUTH))
    registrar, before = f"sip:{DOMAIN}", edge.counters()
    with Uac(edge.address, user="alice", host="127.0.0.2") as attacker:
        # REGISTER as alice: no credentials -> 401; a wrong password or bob's own valid
        # credentials -> 403
        assert attacker.register(registrar, call_id=secrets.token_hex(8), cseq=1).status == 401
        for user, password, reason in (
            ("alice", "guess", "Forbidden: bad credentials"),
            ("bob", PASSWORD["bob"], "Forbidden: identity mismatch"),
        ):
            result = _register_with(attacker, registrar, user, password)
            assert (result.status, _reason(result)) == (403, reason), user
        assert edge.registrations() == {}
        # in-dialog bypass: checked before authentication would be
        park = f"sip:park@{DOMAIN}"
        edge_route = ("Route", f"<sip:{edge.address[0]}:{edge.address[1]};lr>")
        bypass = attacker.request("INVITE", f"sip:victim@{VICTIM}", to_tag=new_tag(), headers=[edge_route])
        assert bypass.status == 403
        assert attacker.invite(park).status == 407 and attacker.invite(park).answered_by is None
    # alice herself registers with her password
    with Uac(edge.address, user="alice", host="127.0.0.3") as alice:
        assert _register_with(alice, registrar, "alice", PASSWORD["alice"]).status == 200
    assert list(edge.registrations()) == ["alice"]
    _counted(edge, before, {"auth_refused": 2, "dialog_refused": 1})


def _register_with(uac: Uac, registrar: str, user: str, password: str) -> CallResult:
    """REGISTER ``uac``'s user answering the edge's challenge with ``user``'s credentials."""
    from tests.edge.test_digest_replay import _challenge, _md5  # the replay test's digest helpers

    call_id = secrets.token_hex(8)
    challenge = _challenge(uac.register(registrar, call_id=call_id, cseq=1), "WWW-Authenticate")
    cnonce, nonce = secrets.token_hex(8), challenge["nonce"]
    ha2 = _md5(f"REGISTER:{registrar}")
    response = _md5(f"{ha1(user, DOMAIN, password)}:{nonce}:00000001:{cnonce}:auth:{ha2}")
    value = (
        f'Digest username="{user}", realm="{DOMAIN}", nonce="{nonce}", uri="{registrar}", algorithm=MD5, '
        f'response="{response}", qop=auth, nc=00000001, cnonce="{cnonce}"'
    )
    return uac.register(registrar, call_id=call_id, cseq=2, headers=[("Authorization", value)])
