"""The admin token of the HTTP API: loaded from a file, checked in constant time, never shown.

Without a token the HTTP API is read-only (every write is 405). With one, a write needs
``Authorization: Bearer <token>``: missing gives 401 with ``WWW-Authenticate``, wrong
gives 403. The token comes from ``--admin-token-file`` or ``CALLPARK_ADMIN_TOKEN_FILE``,
never from the command line (``/proc/<pid>/cmdline`` is world-readable), and no log
line, metric, API answer or error message ever contains it.
"""

from __future__ import annotations

import hmac
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from callpark.errors import CallparkError

ENV_TOKEN_FILE = "CALLPARK_ADMIN_TOKEN_FILE"
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 4096
REALM = "callpark-admin"


class AdminTokenError(CallparkError):
    """The admin token file is unusable; the message names the file, never its content."""


@dataclass(frozen=True)
class AdminToken:
    """A loaded token. ``repr`` and ``str`` hide it, so it cannot leak through a log call."""

    _secret: bytes

    def __repr__(self) -> str:
        return "AdminToken(<hidden>)"

    __str__ = __repr__

    def check(self, authorization: str | None) -> int:
        """200 when the header carries this token, 401 when it carries none, 403 when wrong."""
        if not authorization:
            return 401
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return 401
        given = presented.strip().encode("utf-8", "surrogateescape")
        return 200 if hmac.compare_digest(given, self._secret) else 403


def load(path: Path) -> AdminToken:
    """Read a token file: one line of 16+ printable ASCII characters, not world-readable."""
    try:
        mode = path.stat().st_mode
        raw = path.read_bytes()
    except OSError as exc:
        raise AdminTokenError(f"admin token file {str(path)!r}: cannot read it: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise AdminTokenError(f"admin token file {str(path)!r} is not a regular file")
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise AdminTokenError(f"admin token file {str(path)!r} is readable or writable by others; chmod o-rwx it")
    secret = raw.strip(b"\r\n")
    if not MIN_TOKEN_CHARS <= len(secret) <= MAX_TOKEN_CHARS:
        raise AdminTokenError(
            f"admin token file {str(path)!r} must hold one token of {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters"
        )
    if not all(0x21 <= b <= 0x7E for b in secret):
        raise AdminTokenError(f"admin token file {str(path)!r}: the token must be printable ASCII without spaces")
    return AdminToken(secret)


def from_option(path: str | None) -> AdminToken | None:
    """The token named by ``--admin-token-file`` or else ``CALLPARK_ADMIN_TOKEN_FILE``; None: read-only."""
    chosen = path or os.environ.get(ENV_TOKEN_FILE) or None
    return None if chosen is None else load(Path(chosen))
