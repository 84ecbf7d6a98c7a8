"""A throwaway certificate authority for a local cluster, made with the ``openssl`` CLI.

:func:`make_pki` writes a CA, one etcd server certificate (client URLs), one peer certificate
(raft between members), one service certificate (the SIP edge's TLS listener and the nodes'
and controllers' HTTPS) and client certificates into a directory. Every private key is
created ``0600`` (written through ``O_EXCL``, never readable by others even briefly).
Certificates name ``127.0.0.1`` and ``localhost``: the local cluster listens on loopback.
Production certificates come from the operator's own CA (docs/OPERATIONS.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from callpark.errors import CallparkError

OPENSSL = "openssl"
VALID_DAYS = 825
"""Lifetime of the lab's CA and certificates: 825 days, the longest a publicly trusted server
certificate could have (CA/Browser Forum, 2018-2020), so a lab cluster left running or a
directory kept between runs does not break after a week (the old 7 days did), while
``callpark config check`` still warns when one nears its end (:mod:`callpark.certs`)."""


class PkiError(CallparkError):
    """A certificate could not be made (openssl missing or failing)."""


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key (PEM files)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """Paths of a generated CA and the certificates it signed."""

    ca: Path
    server: CertPair
    peer: CertPair
    clients: dict[str, CertPair]
    service: CertPair  # CN callpark-lab-service: SIP/TLS at the edge, HTTPS of nodes and controllers


def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    try:
        done = subprocess.run([OPENSSL, *args], input=stdin, capture_output=True, timeout=30, check=False)
    except FileNotFoundError:
        raise PkiError("openssl is not installed; run scripts/bootstrap.sh (apt-get install openssl)") from None
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise PkiError(f"openssl {args[0]} failed: {last}")
    return done.stdout


def _private_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _new_key(path: Path) -> Path:
    _private_file(path, _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"))
    return path


def _sign(
    directory: Path, ca_cert: Path, ca_key: Path, name: str, cn: str, usage: str, san: bool, days: int
) -> CertPair:
    key = _new_key(directory / f"{name}.key")
    csr = _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={cn}")
    ext = directory / f"{name}.ext"
    lines = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature", f"extendedKeyUsage={usage}"]
    if san:
        lines.append("subjectAltName=IP:127.0.0.1,DNS:localhost")
    ext.write_text("\n".join(lines) + "\n")
    cert = directory / f"{name}.crt"
    _openssl(
        "x509", "-req", "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial", "-days", str(days),
        "-sha256", "-extfile", str(ext), "-out", str(cert), stdin=csr,
    )  # fmt: skip
    ext.unlink()
    return CertPair(cert, key)


def make_pki(directory: Path, clients: dict[str, str], *, days: int = VALID_DAYS) -> Pki:
    """Create a CA and certificates valid for ``days`` in ``directory`` (mode 0700).

    :param clients: file stem -> certificate CN for each client certificate. With
        ``--client-cert-auth`` etcd takes the CN as the user name of a request that
        carries no auth token, so give client certificates a CN that is *not* an etcd
        user unless a certificate alone should be enough.
    """
    if shutil.which(OPENSSL) is None:
        raise PkiError("openssl is not installed; run scripts/bootstrap.sh (apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_key = _new_key(directory / "ca.key")
    ca = directory / "ca.crt"
    _openssl(
        "req", "-x509", "-new", "-key", str(ca_key), "-subj", "/CN=callpark throwaway etcd CA", "-days",
        str(days), "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", str(ca),
    )  # fmt: skip
    # The server certificate is also a client certificate: etcd 3.4's gRPC gateway
    # dials its own client port with it when client certificate auth is on.
    sign = partial(_sign, directory, ca, ca_key, days=days)
    server = sign("server", "etcd-server", "serverAuth,clientAuth", san=True)
    peer = sign("peer", "etcd-peer", "serverAuth,clientAuth", san=True)
    service = sign("service", "callpark-lab-service", "serverAuth", san=True)
    issued = {stem: sign(stem, cn, "clientAuth", san=False) for stem, cn in clients.items()}
    return Pki(ca=ca, server=server, peer=peer, clients=issued, service=service)
