"""Edge security: trusted-source ACL, the X-Callpark-Source header, digest auth rendering.

Real Kamailio and SIPp stand-ins; the callers bind to other loopback addresses (127.0.0.2,
127.0.0.3: all of 127/8 is loopback on Linux) to be distinct sources.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from callpark.edge import ConfigError, EdgeConfig, PoolSpec, check_config, render_dispatcher_list, render_kamailio_cfg
from callpark.edge.config import COUNTER_GROUP, EDGE_COUNTERS, render_credentials_cfg
from callpark.edge.credentials import DigestAuth, ha1
from callpark.netutil import free_port
from tests.edge.conftest import DOMAIN, Lab, needs_kamailio, needs_sipp, two_pool_config
from tests.edge.uac import Uac

AUTH = DigestAuth(DOMAIN, {"alice": ha1("alice", DOMAIN, "s3cret-pw")})


def secured(**fields: object) -> EdgeConfig:
    return EdgeConfig(
        port=free_port(udp_too=True),
        domain=DOMAIN,
        pools=(PoolSpec(name="a", nodes=("127.0.0.1:16001",)),),
        **fields,  # type: ignore[arg-type]
    )


def test_without_security_settings_only_loopback_is_trusted() -> None:
    cfg = render_kamailio_cfg(secured(), dispatcher_list=Path("/tmp/ds.list"))
    assert 'if (!(ds_is_from_list() || is_in_subnet("$si", "127.0.0.0/8") || is_in_subnet("$si", "::1/128")))' in cfg
    assert "proxy_challenge" not in cfg and "auth.so" not in cfg
    opted_out = render_kamailio_cfg(secured(trusted_peers=()), dispatcher_list=Path("/tmp/ds.list"))
    assert "ds_is_from_list() || is_in_subnet" not in opted_out  # no ACL (register_peers still apply)
    assert cfg.index('remove_hf("X-Callpark-Source")') < cfg.index('append_hf("X-Callpark-Source: $si\\r\\n")')


def test_acl_lists_every_network_and_always_lets_park_nodes_in() -> None:
    cfg = render_kamailio_cfg(secured(trusted_peers=("10.0.0.0/8", "::1")), dispatcher_list=Path("/tmp/ds.list"))
    assert 'if (!(ds_is_from_list() || is_in_subnet("$si", "10.0.0.0/8") || is_in_subnet("$si", "::1/128")))' in cfg
    assert 'sl_send_reply("403", "Forbidden: untrusted source")' in cfg


def test_bad_trusted_peer_is_named() -> None:
    with pytest.raises(ConfigError, match=r"'10\.0\.0\.1/8'"):
        secured(trusted_peers=("10.0.0.1/8",))


def test_hashes_go_to_the_credentials_file_only_and_auth_needs_it() -> None:
    config = secured(auth=AUTH)
    with pytest.raises(ConfigError, match="credentials_file"):
        render_kamailio_cfg(config, dispatcher_list=Path("/tmp/ds.list"))
    cfg = render_kamailio_cfg(config, dispatcher_list=Path("/tmp/ds.list"), credentials_file=Path("/tmp/c.cfg"))
    digest = AUTH.users["alice"]
    assert digest not in cfg and "s3cret-pw" not in cfg
    assert 'import_file "/tmp/c.cfg"' in cfg
    creds = render_credentials_cfg(config)
    assert f'$sht(callpark_auth=>alice) = "{digest}";' in creds and "s3cret-pw" not in creds


@needs_kamailio
def test_kamailio_accepts_the_secured_config(tmp_path: Path) -> None:
    config = secured(auth=AUTH, trusted_peers=("127.0.0.0/8", "10.0.0.0/8", "fd00::/8"))
    (tmp_path / "ds.list").write_text(render_dispatcher_list(config))
    (tmp_path / "c.cfg").write_text(render_credentials_cfg(config))
    path = tmp_path / "kamailio.cfg"
    path.write_text(
        render_kamailio_cfg(config, dispatcher_list=tmp_path / "ds.list", credentials_file=tmp_path / "c.cfg")
    )
    assert "config file ok" in check_config(path)


@needs_kamailio
@needs_sipp
def test_untrusted_sources_get_403_and_trusted_ones_reach_the_node(lab: Lab) -> None:
    node = lab.uas("a1")
    config = two_pool_config((node.address,), ())
    edge = lab.edge(EdgeConfig(**{**config.__dict__, "trusted_peers": ("127.0.0.1/32", "127.0.0.3/32")}))
    with Uac(edge.address, host="127.0.0.2") as stranger:
        result = stranger.invite(f"sip:park@{DOMAIN}")
        assert result.status == 403 and result.final is not None
        assert result.final.reason == "Forbidden: untrusted source"
    with Uac(edge.address, host="127.0.0.3") as friend:
        result = friend.invite(f"sip:park@{DOMAIN}")
        assert result.status == 200 and result.answered_by == "a1"


@needs_kamailio
@needs_sipp
def test_the_source_header_names_the_real_source_and_forged_ones_are_dropped(lab: Lab) -> None:
    node = lab.uas("a1")
    edge = lab.edge(two_pool_config((node.address,), ()))
    with Uac(edge.address, host="127.0.0.2") as caller:
        result = caller.invite(f"sip:park@{DOMAIN}", headers=[("X-Callpark-Source", "127.0.0.9")])
        assert result.status == 200 and result.final is not None
        assert result.final.header_values("X-Callpark-Source") == ["127.0.0.2"]


def test_every_edge_counter_is_declared_and_counted_somewhere() -> None:
    """Each refusal counter is declared to the counters module and incremented by some route."""
    rendered = render_kamailio_cfg(
        secured(auth=AUTH), dispatcher_list=Path("/tmp/ds.list"), credentials_file=Path("/tmp/c.cfg")
    ) + render_kamailio_cfg(secured(), dispatcher_list=Path("/tmp/ds.list"))
    for name in EDGE_COUNTERS:
        assert f'"script_counter", "{COUNTER_GROUP}.{name}:' in rendered, name
        assert f'cnt_inc("{COUNTER_GROUP}.{name}")' in rendered, name
