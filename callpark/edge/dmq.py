"""Registrations replicated between the edges of every site (Kamailio DMQ + dmq_usrloc).

Each edge listens on a second UDP port for KDMQ, the peers' replication protocol, and names
the other edges as notification peers; ``dmq_usrloc`` then copies every REGISTER (and its
expiry) to every edge, and a restarted edge asks a peer for the whole table. So any edge
reaches any registered phone: a node of the backup site can ring back, or send the orbit
MESSAGE to, a parker who registered only at the primary site's edge.

KDMQ is accepted on the DMQ port only, and only from a configured peer's address; anything
else on that port is refused (403) and counted as ``untrusted_refused``. The port carries
registrations (who is where): keep it on the sites' private network.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class EdgeDmq:
    """This edge's DMQ ``port`` (on the edge's host) and its ``peers`` (other edges' ``ip:port``)."""

    port: int
    peers: tuple[str, ...]

    def problems(self, sip_port: int) -> list[str]:
        """What is wrong with this description (empty when it is sound)."""
        found = []
        if not 0 < self.port < 65536 or self.port == sip_port:
            found.append(f"dmq port {self.port} must be 1-65535 and not the SIP port")
        if not self.peers:
            found.append("dmq needs at least one peer edge (ip:port)")
        for peer in self.peers:
            host, _, port = peer.rpartition(":")
            try:
                ipaddress.IPv4Address(host)
                ok = port.isdigit() and 0 < int(port) < 65536
            except ValueError:
                ok = False
            if not ok:
                found.append(f"dmq peer {peer!r} must be an IPv4 address and a port")
        return found

    def peer_hosts(self) -> list[str]:
        return sorted({p.rpartition(":")[0] for p in self.peers})


def dmq_fields(dmq: EdgeDmq | None, host: str) -> dict[str, str]:
    """Template fields: the DMQ listener, modules and parameters, and the KDMQ request guard."""
    if dmq is None:
        return {"dmq_listen": "", "dmq_modules": "", "dmq_params": "", "dmq_block": "\t# no DMQ replication"}
    params = [
        "# ----- dmq + dmq_usrloc: registrations replicated to every other edge (callpark.edge.dmq)",
        f'modparam("dmq", "server_address", "sip:{host}:{dmq.port}")',
        *(f'modparam("dmq", "notification_address", "sip:{peer}")' for peer in dmq.peers),
        'modparam("dmq", "multi_notify", 1)',
        'modparam("dmq", "num_workers", 2)',
        'modparam("dmq", "ping_interval", 15)',
        'modparam("dmq_usrloc", "enable", 1)',
        'modparam("dmq_usrloc", "sync", 1)',
    ]
    sources = " || ".join(f'$si == "{h}"' for h in dmq.peer_hosts())
    block = "\n".join(
        [
            f"\t# KDMQ (registrations from the other edges) only on the DMQ port {dmq.port}, only from a peer",
            f"\tif ($Rp == {dmq.port}) {{{{",
            f'\t\tif (is_method("KDMQ") && ({sources})) {{{{',
            "\t\t\tdmq_handle_message();",
            "\t\t\texit;",
            "\t\t}}",
            '\t\tcnt_inc("callpark.untrusted_refused");',
            '\t\tsl_send_reply("403", "Forbidden: not a DMQ peer");',
            "\t\texit;",
            "\t}}",
            '\tif (is_method("KDMQ")) {{',
            '\t\tcnt_inc("callpark.untrusted_refused");',
            '\t\tsl_send_reply("403", "Forbidden: not a DMQ peer");',
            "\t\texit;",
            "\t}}",
        ]
    )
    return {
        "dmq_listen": f"listen=udp:{host}:{dmq.port}",
        "dmq_modules": 'loadmodule "dmq.so"\nloadmodule "dmq_usrloc.so"\n',
        "dmq_params": "\n".join(params) + "\n",
        "dmq_block": block,
    }
