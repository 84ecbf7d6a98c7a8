"""Certificate files callpark serves or trusts: readable, matching key, and not about to expire.

The expiry date is read with the ``openssl`` command (already a dependency of the lab's CA and
of etcd TLS; Python's :mod:`ssl` decodes only CA certificates). Warnings are one line each:
``certificate <path> (<what>) expires in 12 days (2027-01-01)``.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from callpark.errors import CallparkError

__all__ = ["EXPIRY_WARNING_DAYS", "CertError", "CertInfo", "expiry_warning", "read_cert"]

EXPIRY_WARNING_DAYS = 30
"""Warn about a certificate that expires within this many days (``--cert-warning-days``)."""


class CertError(CallparkError):
    """A certificate file is missing, unreadable or not a PEM certificate."""


@dataclass(frozen=True)
class CertInfo:
    """What callpark needs to know about one certificate."""

    path: Path
    subject: str
    not_after: float  # seconds since the epoch

    def days_left(self, now: float | None = None) -> float:
        return (self.not_after - (time.time() if now is None else now)) / 86400.0


def read_cert(path: Path | str) -> CertInfo:
    """The subject and expiry of the PEM certificate at ``path``.

    :raises CertError: one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CertError(f"certificate {path}: no such file")
    openssl = shutil.which("openssl")
    if openssl is None:
        raise CertError("openssl is not installed; run scripts/bootstrap.sh (apt-get install openssl)")
    done = subprocess.run(
        [openssl, "x509", "-noout", "-enddate", "-subject", "-nameopt", "RFC2253", "-in", str(path)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    fields = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    if done.returncode != 0 or "notAfter" not in fields:
        raise CertError(f"certificate {path}: not a PEM certificate")
    try:
        not_after = float(ssl.cert_time_to_seconds(fields["notAfter"].strip()))
    except ValueError:
        raise CertError(f"certificate {path}: unreadable expiry date {fields['notAfter']!r}") from None
    return CertInfo(path, fields.get("subject", "").strip(), not_after)


def expiry_warning(
    path: Path | str, what: str, *, days: int = EXPIRY_WARNING_DAYS, now: float | None = None
) -> str | None:
    """One line when the certificate at ``path`` has expired or expires within ``days``, else None.

    :raises CertError: when the file is not a certificate.
    """
    info = read_cert(path)
    left = info.days_left(now)
    date = time.strftime("%Y-%m-%d", time.gmtime(info.not_after))
    if left < 0:
        return f"certificate {info.path} ({what}) expired on {date}"
    if left < days:
        return f"certificate {info.path} ({what}) expires in {int(left)} days ({date}); renew it"
    return None
