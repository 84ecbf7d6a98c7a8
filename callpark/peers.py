"""Trusted SIP peers: the addresses and networks a park node or the edge accepts requests from.

A peer list is written ``127.0.0.1/32,10.0.0.0/8,::1`` (CLI) or as a TOML array of the same
items. An item is an IPv4 or IPv6 address (a /32 or /128) or a network in CIDR notation with
no host bits set (``10.0.0.5/8`` is refused: it is almost always a typo for ``10.0.0.0/8``
or ``10.0.0.5/32``). :func:`parse_peers` raises :class:`ValidationError` naming the bad item.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from callpark.errors import ValidationError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_TRUSTED_PEERS: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
"""Loopback only: the local cluster keeps working; production lists its proxies (and the
edge host named by ``--edge`` is always added by the node)."""

MAX_PEERS = 256


def parse_peer(item: str, *, where: str = "trusted peers") -> Network:
    """One address or CIDR network; raises :class:`ValidationError` naming ``item``."""
    text = item.strip()
    if not text:
        raise ValidationError("trusted-peers", f"{where}: empty entry")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValidationError(
            "trusted-peers", f"{where}: {text!r} is not an IP address or CIDR network ({exc})"
        ) from None


def parse_peers(items: str | Iterable[str], *, where: str = "trusted peers") -> tuple[Network, ...]:
    """A comma-separated string, or an iterable of strings, into networks (duplicates dropped)."""
    parts = items.split(",") if isinstance(items, str) else list(items)
    if not parts or (isinstance(items, str) and not items.strip()):
        raise ValidationError("trusted-peers", f"{where}: at least one address or network is needed")
    if len(parts) > MAX_PEERS:
        raise ValidationError("trusted-peers", f"{where}: at most {MAX_PEERS} entries, not {len(parts)}")
    out: list[Network] = []
    for part in parts:
        if not isinstance(part, str):
            raise ValidationError("trusted-peers", f"{where}: {part!r} is not a string")
        net = parse_peer(part, where=where)
        if net not in out:
            out.append(net)
    return tuple(out)


def host_of(address: str) -> str:
    """The host of ``host:port``, ``[v6]:port`` or a bare address."""
    text = address.strip()
    if text.startswith("["):
        return text[1 : text.index("]")] if "]" in text else text[1:]
    if text.count(":") == 1:
        return text.rsplit(":", 1)[0]
    return text


def is_ip(text: str) -> bool:
    """True when ``text`` is exactly one IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def resolve_host(address: str, *, where: str = "--edge") -> tuple[str, ...]:
    """The IP addresses of the host of ``address`` (``host:port`` or an address); a name is
    resolved now (DNS or /etc/hosts). Raises :class:`ValidationError` when it does not resolve."""
    host = host_of(address)
    if is_ip(host):
        return (str(ipaddress.ip_address(host)),)
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        raise ValidationError("trusted-peers", f"{where} {address}: cannot resolve {host!r} ({exc})") from None
    ips = [str(info[4][0]) for info in infos]
    return tuple(dict.fromkeys(ips))


@dataclass(frozen=True)
class TrustedPeers:
    """An allow list of networks; ``allows`` answers for one source address."""

    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, items: str | Iterable[str], *, where: str = "trusted peers") -> TrustedPeers:
        return cls(parse_peers(items, where=where))

    def allows(self, address: str) -> bool:
        """True when ``address`` (``ip``, ``ip:port`` or ``[v6]:port``) is in a trusted network."""
        try:
            ip = ipaddress.ip_address(host_of(address))
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.networks)

    def with_host(self, address: str | None) -> TrustedPeers:
        """A copy that also trusts the host of ``address`` (when it is an IP address)."""
        if not address:
            return self
        try:
            ip = ipaddress.ip_address(host_of(address))
        except ValueError:
            return self
        net = ipaddress.ip_network(ip)
        return self if net in self.networks else TrustedPeers((*self.networks, net))

    def __str__(self) -> str:
        return ",".join(str(n) for n in self.networks)


__all__ = [
    "DEFAULT_TRUSTED_PEERS",
    "Network",
    "TrustedPeers",
    "host_of",
    "is_ip",
    "parse_peer",
    "parse_peers",
    "resolve_host",
]
