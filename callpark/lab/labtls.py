"""What a local cluster needs for ``[sip_tls]`` and ``[http]``: the edge's TLS listener, the nodes'
and controllers' HTTPS and admin-token flags, and the CA clients trust.

Files named in the deployment file are used as given; without them the lab CA
(:mod:`callpark.lab.tls`) makes a service certificate for 127.0.0.1 under the run directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from callpark.edge.config import EdgeTls
from callpark.encryption import Encryption
from callpark.lab.tls import make_pki
from callpark.netutil import free_port


@dataclass(frozen=True)
class LabEncryption:
    """The edge's TLS settings, the HTTP flags of nodes and controllers, and the HTTPS CA."""

    edge_tls: EdgeTls | None = None
    http_args: list[str] = field(default_factory=list)
    http_ca: Path | None = None

    @classmethod
    def prepare(cls, enc: Encryption, run_dir: Path) -> LabEncryption:
        """Resolve the sections, making lab certificates where the file names none."""
        http = enc.http
        needs_lab = (enc.sip_tls is not None and enc.sip_tls.cert is None) or (http.https and http.cert is None)
        pki = make_pki(run_dir / "tls", {}) if needs_lab else None
        edge_tls = None
        if enc.sip_tls is not None:
            cert, key = enc.sip_tls.cert, enc.sip_tls.key
            if cert is None or key is None:
                assert pki is not None
                cert, key = pki.service.cert, pki.service.key
            edge_tls = EdgeTls(port=enc.sip_tls.port or free_port(), cert=cert.resolve(), key=key.resolve())
        args: list[str] = []
        if http.admin_token_file is not None:
            args += ["--admin-token-file", str(http.admin_token_file)]
        ca = http.ca
        if http.https:
            cert, key = http.cert, http.key
            if cert is None or key is None:
                assert pki is not None
                cert, key, ca = pki.service.cert, pki.service.key, pki.ca
            args += ["--http-cert", str(cert), "--http-key", str(key)]
        return cls(edge_tls, args, ca)
