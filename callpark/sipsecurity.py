"""The SIP part of a deployment file's ``[security]`` section, validated with one-line errors.

::

    [security]
    trusted_peers = ["127.0.0.0/8", "::1"]   # the edge accepts SIP only from these (and its nodes)
    node_trusted_peers = ["127.0.0.1/32"]    # the park nodes (default: only the edge, --edge)
    register_peers = ["10.1.0.0/16"]         # without digest auth: phones that may REGISTER (default loopback)
    digest_auth_file = "users.htdigest"      # htdigest file (relative to the TOML file): edge digest auth
    digest_realm = "callpark.test"           # required with digest_auth_file: the realm of its lines
    orbit_scan_burst = 10                    # orbit misses a source may make at once (per node)
    orbit_scan_per_minute = 6.0              # ... and sustained

Every key is optional; without the section the local cluster behaves as before (loopback
trusted, no authentication). A deployment whose edges or nodes listen on a non-loopback address
(``[edge] hosts``, ``[[pool]] hosts``) must set ``digest_auth_file``, or both its own
``trusted_peers`` and ``register_peers`` (neither ``0.0.0.0/0``): :meth:`SipSecurity.check_exposure`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callpark.edge.credentials import CredentialsError, DigestAuth, read_htdigest
from callpark.errors import ValidationError
from callpark.peers import DEFAULT_TRUSTED_PEERS, parse_peers
from callpark.ratelimit import ScanLimit

KEYS = frozenset(
    {
        "trusted_peers",
        "node_trusted_peers",
        "digest_auth_file",
        "digest_realm",
        "register_peers",
        "orbit_scan_burst",
        "orbit_scan_per_minute",
    }
)


OPEN_RULE = "config-open-deployment"
"""The rule :meth:`SipSecurity.check_exposure` names when it refuses an open deployment."""

OPEN_REGISTRAR_RULE = "config-open-registrar"
"""The rule :meth:`SipSecurity.check_exposure` names when anyone could register as anyone."""


@dataclass(frozen=True)
class SipSecurity:
    """Who may talk SIP to the edge and the nodes, digest auth at the edge, the orbit-scan limit.

    ``peers_given``: ``trusted_peers`` came from the file (not the loopback default).
    """

    trusted_peers: tuple[str, ...] = DEFAULT_TRUSTED_PEERS
    node_trusted_peers: tuple[str, ...] | None = None  # None: the node trusts only its edge (--edge)
    register_peers: tuple[str, ...] | None = None  # None: the edge's default (loopback)
    digest: DigestAuth | None = None
    scan: ScanLimit = field(default_factory=ScanLimit)
    peers_given: bool = False

    def check_exposure(self, listeners: dict[str, tuple[str, ...]]) -> None:
        """Refuse an open deployment: one that listens on a non-loopback address (``listeners``:
        what -> addresses) with neither digest auth nor a trusted-peer list of its own that
        leaves the world out (``0.0.0.0/0`` or ``::/0`` count as no list).

        :raises ValidationError: rule :data:`OPEN_RULE`, naming the first exposed listener.
        """
        exposed = [(what, a) for what, addresses in listeners.items() for a in addresses if not _loopback(a)]
        if not exposed or self.digest is not None:
            return
        what, address = exposed[0]
        if not self.peers_given or _world(self.trusted_peers):
            raise ValidationError(
                OPEN_RULE,
                f"{what} listens on {address}, not loopback, but [security] sets neither digest_auth_file nor"
                " trusted_peers (without 0.0.0.0/0): anyone could park, retrieve and relay",
            )
        if self.register_peers is None or not self.register_peers or _world(self.register_peers):
            raise ValidationError(
                OPEN_REGISTRAR_RULE,
                f"{what} listens on {address}, not loopback, without digest_auth_file: [security] register_peers"
                " must name the phone networks that may register unauthenticated (not 0.0.0.0/0)",
            )

    def node_args(self) -> list[str]:
        """``callpark node`` flags that carry these settings."""
        peers = ["--trusted-peers", ",".join(self.node_trusted_peers)] if self.node_trusted_peers else []
        return [
            *peers,
            "--orbit-scan-burst",
            str(self.scan.burst),
            "--orbit-scan-per-minute",
            str(self.scan.per_minute),
        ]

    def edge_fields(self) -> dict[str, Any]:
        """:class:`~callpark.edge.config.EdgeConfig` fields that carry these settings."""
        fields: dict[str, Any] = {"trusted_peers": self.trusted_peers, "auth": self.digest}
        if self.register_peers is not None:
            fields["register_peers"] = self.register_peers
        return fields


def _peers(raw: dict[str, Any], key: str) -> tuple[str, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("config-security", f"[security] {key} must be an array of strings, not {value!r}")
    return tuple(str(n) for n in parse_peers(value, where=f"[security] {key}"))


def parse(raw: dict[str, Any], base: Path) -> SipSecurity:
    """The ``[security]`` table (``base``: the directory relative paths start from)."""
    unknown = set(raw) - KEYS
    if unknown:
        raise ValidationError("config-unknown", f"unknown [security] key(s): {', '.join(sorted(unknown))}")
    trusted = _peers(raw, "trusted_peers") or DEFAULT_TRUSTED_PEERS
    nodes = _peers(raw, "node_trusted_peers")
    burst = raw.get("orbit_scan_burst", ScanLimit().burst)
    if not isinstance(burst, int) or isinstance(burst, bool):
        raise ValidationError("config-security", f"[security] orbit_scan_burst must be a whole number, not {burst!r}")
    rate = raw.get("orbit_scan_per_minute", ScanLimit().per_minute)
    if not isinstance(rate, int | float) or isinstance(rate, bool):
        raise ValidationError("config-security", f"[security] orbit_scan_per_minute must be a number, not {rate!r}")
    try:
        scan = ScanLimit(burst=burst, per_minute=float(rate)).validate()
    except ValidationError as exc:
        raise ValidationError("config-security", f"[security] {exc.message}") from None
    digest = None
    file, realm = raw.get("digest_auth_file"), raw.get("digest_realm")
    if file is not None or realm is not None:
        if not isinstance(file, str) or not isinstance(realm, str):
            raise ValidationError(
                "config-security", "[security] digest_auth_file and digest_realm must be given together, as strings"
            )
        try:
            digest = DigestAuth(realm, read_htdigest(base / file, realm))
        except CredentialsError as exc:
            raise ValidationError("config-security", f"[security] {exc}") from None
    given = raw.get("trusted_peers") is not None
    return SipSecurity(
        trusted_peers=trusted,
        node_trusted_peers=nodes,
        register_peers=_peers(raw, "register_peers"),
        digest=digest,
        scan=scan,
        peers_given=given,
    )


def _world(peers: tuple[str, ...]) -> bool:
    return any(n.prefixlen == 0 for n in parse_peers(peers))


def _loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def parse_hosts(value: Any, where: str) -> tuple[str, ...]:
    """A TOML array of listen addresses (IP addresses; default loopback when absent)."""
    if value is None:
        return ("127.0.0.1",)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValidationError("config-hosts", f"{where}: 'hosts' must be a non-empty array of IP addresses")
    try:
        return tuple(str(ipaddress.ip_address(v)) for v in value)
    except ValueError as exc:
        raise ValidationError("config-hosts", f"{where}: 'hosts': {exc}") from None


__all__ = ["OPEN_REGISTRAR_RULE", "OPEN_RULE", "SipSecurity", "parse", "parse_hosts"]
