"""Digest replay at the edge: a captured Authorization header works once, never again.

Real Kamailio with digest auth, a raw UDP phone computing its own digest responses (qop=auth),
a SIPp stand-in park node. The attacker replays the captured header on a new request, from the
same address (the strongest case: a source check alone would not stop it).
"""

from __future__ import annotations

import hashlib
import re
import secrets

from callpark.edge import EdgeConfig
from callpark.edge.credentials import DigestAuth, ha1
from callpark.sip.message import SipMessage
from tests.edge.conftest import DOMAIN, Lab, needs_kamailio, needs_sipp, two_pool_config
from tests.edge.uac import CallResult, Uac

PASSWORD = "s3cret-pw-replay"
AUTH = DigestAuth(DOMAIN, {"alice": ha1("alice", DOMAIN, PASSWORD)})


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _challenge(result: CallResult, header: str) -> dict[str, str]:
    final = result.final
    assert final is not None and final.status_code in (401, 407), result.status
    value = final.header(header) or ""
    return dict(re.findall(r'(\w+)="?([^",]*)"?', value.removeprefix("Digest ")))


def _credentials(challenge: dict[str, str], method: str, uri: str, nc: int) -> str:
    """An Authorization value for ``method uri`` answering ``challenge`` with nonce count ``nc``."""
    cnonce, count = secrets.token_hex(8), f"{nc:08x}"
    ha2, nonce = _md5(f"{method}:{uri}"), challenge["nonce"]
    head = f'Digest username="alice", realm="{DOMAIN}", nonce="{nonce}", uri="{uri}", algorithm=MD5, '
    secret = ha1("alice", DOMAIN, PASSWORD)
    if challenge.get("qop") != "auth":  # RFC 2069 style, as an edge without qop asks
        return head + f'response="{_md5(f"{secret}:{nonce}:{ha2}")}"'
    response = _md5(f"{secret}:{nonce}:{count}:{cnonce}:auth:{ha2}")
    return head + f'response="{response}", qop=auth, nc={count}, cnonce="{cnonce}"'


def _status(result: CallResult) -> int | None:
    final: SipMessage | None = result.final
    return None if final is None else final.status_code


@needs_kamailio
@needs_sipp
def test_a_replayed_register_or_invite_authorization_is_refused_and_a_fresh_one_works(lab: Lab) -> None:
    node = lab.uas("a1")
    edge = lab.edge(EdgeConfig(**{**two_pool_config((node.address,), ()).__dict__, "auth": AUTH}))
    registrar = f"sip:{DOMAIN}"
    with Uac(edge.address, user="alice") as alice:
        call_id = secrets.token_hex(8)
        challenge = _challenge(alice.register(registrar, call_id=call_id, cseq=1), "WWW-Authenticate")
        captured = ("Authorization", _credentials(challenge, "REGISTER", registrar, 1))
        assert _status(alice.register(registrar, call_id=call_id, cseq=2, headers=[captured])) == 200
        replay = alice.register(registrar, call_id=call_id, cseq=3, headers=[captured])
        assert _status(replay) in (401, 403), "a replayed REGISTER Authorization was accepted"
        assert challenge.get("qop") == "auth"  # so phones may reuse a nonce with a higher count
        fresh = ("Authorization", _credentials(challenge, "REGISTER", registrar, 2))
        assert _status(alice.register(registrar, call_id=call_id, cseq=4, headers=[fresh])) == 200

        park = f"sip:park@{DOMAIN}"
        challenge = _challenge(alice.invite(park), "Proxy-Authenticate")
        captured = ("Proxy-Authorization", _credentials(challenge, "INVITE", park, 1))
        call = alice.invite(park, headers=[captured])
        assert call.status == 200 and call.answered_by == "a1" and call.bye_status == 200
        replay = alice.invite(park, headers=[captured])
        assert replay.status in (401, 403, 407) and replay.answered_by is None, "a replayed INVITE was relayed"
        challenge = _challenge(replay if replay.status == 407 else alice.invite(park), "Proxy-Authenticate")
        fresh = ("Proxy-Authorization", _credentials(challenge, "INVITE", park, 1))
        assert alice.invite(park, headers=[fresh]).answered_by == "a1"
    assert edge.counters()["auth_stale"] >= 2  # each replay counted (kamailio counter callpark.auth_stale)
