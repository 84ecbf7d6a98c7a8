"""The ``[sip_tls]`` and ``[http]`` sections of a deployment file: SIP over TLS at the edge, HTTPS
and the admin token of the nodes' and controllers' HTTP API, validated with one-line errors.

::

    [sip_tls]                        # SIP over TLS at the edge, beside UDP
    port = 5061                      # TCP port of the TLS listener (0: a free port, local cluster)
    cert = "certs/edge.crt"          # PEM certificate (chain) naming the SIP domain, and its key;
    key = "certs/edge.key"           #   both absent: the local cluster makes lab certificates

    [http]                           # the nodes' and controllers' HTTP API
    admin_token_file = "admin.token" # enables admin writes and /api/parked (mode 0600)
    cert = "certs/http.crt"          # HTTPS; both absent and https = true: lab certificates
    key = "certs/http.key"
    https = true                     # implied by cert/key
    ca = "certs/ca.crt"              # what clients (the lab, Prometheus) trust for HTTPS

Paths are relative to the deployment file. Rule (``config-plain-http-token``): a deployment
whose nodes or edges listen on a non-loopback address and that sets an admin token must serve
HTTPS, or the bearer token crosses the network in clear text; as for SIP/TLS, certificates
must then come from the operator (lab certificates name only 127.0.0.1).
"""

from __future__ import annotations

import ipaddress
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callpark import certs
from callpark.errors import ValidationError

__all__ = ["PLAIN_TOKEN_RULE", "Encryption", "HttpSection", "SipTls", "parse"]

PLAIN_TOKEN_RULE = "config-plain-http-token"
RULE = "config-tls"
SIP_TLS_KEYS = frozenset({"port", "cert", "key"})
HTTP_KEYS = frozenset({"admin_token_file", "cert", "key", "https", "ca"})


@dataclass(frozen=True)
class SipTls:
    """``[sip_tls]``: the edge's TLS listener; cert/key None: lab certificates (loopback only)."""

    port: int = 0
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class HttpSection:
    """``[http]``: admin token file, HTTPS certificate and key, and the CA clients trust."""

    admin_token_file: Path | None = None
    https: bool = False
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None


@dataclass(frozen=True)
class Encryption:
    """What the deployment encrypts, and with which files."""

    sip_tls: SipTls | None = None
    http: HttpSection = field(default_factory=HttpSection)

    def check_exposure(self, listeners: dict[str, tuple[str, ...]]) -> None:
        """Refuse a token over plain HTTP, or lab certificates, on non-loopback listeners.

        :raises ValidationError: rule :data:`PLAIN_TOKEN_RULE` or ``config-tls``.
        """
        exposed = [(what, a) for what, addresses in listeners.items() for a in addresses if not _loopback(a)]
        if not exposed:
            return
        what, address = exposed[0]
        http = self.http
        if http.admin_token_file is not None and not http.https:
            raise ValidationError(
                PLAIN_TOKEN_RULE,
                f"{what} listens on {address}, not loopback, and [http] sets an admin token but no HTTPS"
                " (cert and key): the token would cross the network in clear text",
            )
        if http.https and http.cert is None:
            raise ValidationError(RULE, f"{what} listens on {address}: [http] https needs cert and key there")
        if self.sip_tls is not None and self.sip_tls.cert is None:
            raise ValidationError(RULE, f"{what} listens on {address}: [sip_tls] needs cert and key there")

    def cert_files(self) -> dict[str, Path]:
        """Every certificate the file names, by what it is for."""
        named = {"SIP/TLS at the edge": self.sip_tls.cert if self.sip_tls else None}
        named |= {"HTTPS": self.http.cert, "HTTPS CA": self.http.ca}
        return {what: path for what, path in named.items() if path is not None}

    def cert_warnings(self, days: int = certs.EXPIRY_WARNING_DAYS) -> list[str]:
        """One line per certificate that has expired or expires within ``days``."""
        out = []
        for what, path in self.cert_files().items():
            warning = certs.expiry_warning(path, what, days=days)
            if warning:
                out.append(warning)
        return out


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def _file(raw: dict[str, Any], key: str, where: str, base: Path) -> Path | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValidationError("config-type", f"{where} {key} must be a file name")
    path = base / value
    try:
        found = path.is_file()
    except (OSError, ValueError):  # a NUL byte, a name too long
        found = False
    if not found:
        raise ValidationError(RULE, f"{where} {key} {path}: no such file")
    return path


def _pair(raw: dict[str, Any], where: str, base: Path) -> tuple[Path | None, Path | None]:
    """``cert`` and ``key``: both or neither; the certificate must be a readable PEM one."""
    cert, key = _file(raw, "cert", where, base), _file(raw, "key", where, base)
    if (cert is None) != (key is None):
        raise ValidationError(RULE, f"{where} cert and key go together")
    if key is not None and key.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValidationError(RULE, f"{where} key {key} is readable by others: chmod 600 it")
    if cert is not None:
        try:
            certs.read_cert(cert)
        except certs.CertError as exc:
            raise ValidationError(RULE, f"{where} {exc}") from None
    return cert, key


def _unknown(raw: dict[str, Any], known: frozenset[str], where: str) -> None:
    unknown = set(raw) - known
    if unknown:
        raise ValidationError("config-unknown", f"unknown {where} key(s): {', '.join(sorted(unknown))}")


def parse(sip_raw: dict[str, Any] | None, http_raw: dict[str, Any], base: Path) -> Encryption:
    """The two sections (``sip_raw`` None: no ``[sip_tls]``); paths relative to ``base``."""
    sip_tls = None
    if sip_raw is not None:
        _unknown(sip_raw, SIP_TLS_KEYS, "[sip_tls]")
        port = sip_raw.get("port", 0)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ValidationError(RULE, "[sip_tls] port must be 0 (any free port) to 65535")
        sip_tls = SipTls(port, *_pair(sip_raw, "[sip_tls]", base))
    _unknown(http_raw, HTTP_KEYS, "[http]")
    https = http_raw.get("https", False)
    if not isinstance(https, bool):
        raise ValidationError("config-type", "[http] https must be true or false")
    cert, key = _pair(http_raw, "[http]", base)
    http = HttpSection(
        admin_token_file=_file(http_raw, "admin_token_file", "[http]", base),
        https=https or cert is not None,
        cert=cert,
        key=key,
        ca=_file(http_raw, "ca", "[http]", base),
    )
    if http.ca is not None:
        try:
            certs.read_cert(http.ca)
        except certs.CertError as exc:
            raise ValidationError(RULE, f"[http] ca: {exc}") from None
    return Encryption(sip_tls, http)
