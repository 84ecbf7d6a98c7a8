"""SIP digest credentials of the edge: an htdigest file in, HA1 hashes out; never a password.

The file is Apache's ``htdigest`` format, one ``user:realm:HA1`` line each, where
``HA1 = md5(user ":" realm ":" password)`` (RFC 2617/8760 MD5). ``htdigest -c users.htdigest
REALM alice`` writes one; :func:`ha1` computes the same hash. Blank lines and ``#`` comments are
skipped; lines of other realms are ignored (one file may serve several realms). Only HA1
hashes reach Kamailio's generated files, never a password, and no error message quotes a hash.
"""

from __future__ import annotations

import hashlib
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "AUTH_USER_RE",
    "CredentialsError",
    "DigestAuth",
    "check_permissions",
    "ha1",
    "parse_htdigest",
    "read_htdigest",
]

AUTH_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
_REALM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_HA1_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_USERS = 100_000


class CredentialsError(ValueError):
    """The credentials file is unusable; the message names the line, never a hash."""


def ha1(user: str, realm: str, password: str) -> str:
    """``md5(user:realm:password)`` in lowercase hex (the digest HA1)."""
    return hashlib.md5(f"{user}:{realm}:{password}".encode(), usedforsecurity=False).hexdigest()


def check_realm(realm: str) -> str:
    if not _REALM_RE.match(realm):
        raise CredentialsError(f"realm {realm!r} must match {_REALM_RE.pattern}")
    return realm


def parse_htdigest(text: str, realm: str, *, where: str = "credentials") -> dict[str, str]:
    """``{user: ha1}`` of the lines for ``realm``; raises :class:`CredentialsError` naming the line."""
    check_realm(realm)
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3:
            raise CredentialsError(f"{where} line {number}: expected user:realm:HA1")
        user, line_realm, digest = parts
        if line_realm != realm:
            continue
        if not AUTH_USER_RE.match(user):
            raise CredentialsError(f"{where} line {number}: user {user!r} must match {AUTH_USER_RE.pattern}")
        if not _HA1_RE.match(digest.lower()):
            raise CredentialsError(f"{where} line {number}: user {user!r}: HA1 must be 32 hex digits")
        if user in users:
            raise CredentialsError(f"{where} line {number}: user {user!r} appears twice for realm {realm!r}")
        users[user] = digest.lower()
        if len(users) > MAX_USERS:
            raise CredentialsError(f"{where}: more than {MAX_USERS} users")
    if not users:
        raise CredentialsError(f"{where}: no user for realm {realm!r}")
    return users


def check_permissions(path: Path) -> None:
    """Refuse a credentials file others may read, or others or the group may write.

    HA1 hashes are password equivalents: the file must be like ``chmod 0600`` or ``0640``.
    """
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise CredentialsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IWGRP):
        raise CredentialsError(
            f"{path}: mode {stat.S_IMODE(mode):04o} lets others read it or the group or others write it"
            " (HA1 hashes are password equivalents): chmod 0600 or 0640"
        )


def read_htdigest(path: Path, realm: str) -> dict[str, str]:
    """:func:`parse_htdigest` of a file; unreadable files, or files others may read or the group
    may write (:func:`check_permissions`), raise :class:`CredentialsError`."""
    check_permissions(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_htdigest(text, realm, where=str(path))


@dataclass(frozen=True)
class DigestAuth:
    """Digest authentication at the edge: ``realm`` and ``{user: HA1}``.

    ``repr`` hides the hashes (they are password equivalents for this realm).
    """

    realm: str
    users: Mapping[str, str] = field(repr=False)

    def __post_init__(self) -> None:
        check_realm(self.realm)
        if not self.users:
            raise CredentialsError("digest authentication needs at least one user")
        for user, digest in self.users.items():
            if not AUTH_USER_RE.match(user):
                raise CredentialsError(f"user {user!r} must match {AUTH_USER_RE.pattern}")
            if not _HA1_RE.match(digest):
                raise CredentialsError(f"user {user!r}: HA1 must be 32 lowercase hex digits")
