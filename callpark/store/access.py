"""How every callpark process reaches etcd: endpoints, TLS files, user and password.

One source of truth for all entry points. Values come, first match wins, from the CLI's
global options (``--etcd``, ``--etcd-ca``, ``--etcd-cert``, ``--etcd-key``,
``--etcd-user``, ``--etcd-password-file``), then the environment (``CALLPARK_ETCD``,
``CALLPARK_ETCD_CA``, ``CALLPARK_ETCD_CERT``, ``CALLPARK_ETCD_KEY``,
``CALLPARK_ETCD_USER``, ``CALLPARK_ETCD_PASSWORD_FILE``, ``CALLPARK_ETCD_PASSWORD``),
then a deployment file's ``[etcd]`` section. A password is never an option: only a file
(not readable by others) or the environment, and it is never logged or put on a child's
command line; :meth:`EtcdAccess.child_args` passes the file's path instead.
"""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from callpark.errors import StoreError

ENV = {
    "endpoints": "CALLPARK_ETCD",
    "ca": "CALLPARK_ETCD_CA",
    "cert": "CALLPARK_ETCD_CERT",
    "key": "CALLPARK_ETCD_KEY",
    "user": "CALLPARK_ETCD_USER",
    "password_file": "CALLPARK_ETCD_PASSWORD_FILE",
}
ENV_PASSWORD = "CALLPARK_ETCD_PASSWORD"
_OPTIONS = {
    "ca": ("--etcd-ca", "PEM file of the CA that signed the etcd servers' certificates"),
    "cert": ("--etcd-cert", "client certificate (PEM) for etcd's client certificate auth"),
    "key": ("--etcd-key", "private key (PEM) of --etcd-cert"),
    "user": ("--etcd-user", "etcd user name (etcd authentication)"),
    "password_file": ("--etcd-password-file", "file holding the etcd user's password (never on the command line)"),
}


class EtcdAccessError(StoreError):
    """Credentials that cannot be used (missing file, half a pair, readable password file)."""


@dataclass(frozen=True)
class EtcdAccess:
    """Resolved etcd client settings; no secret is held, only where to read it."""

    endpoints: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password_file: str | None = None
    password_env: bool = False  # the password is in $CALLPARK_ETCD_PASSWORD

    def validate(self) -> EtcdAccess:
        """Refuse half-given settings with one line naming what is missing."""
        if (self.cert is None) != (self.key is None):
            raise EtcdAccessError("etcd client certificate and key go together: give both --etcd-cert and --etcd-key")
        has_password = self.password_file is not None or self.password_env
        if self.user is not None and not has_password:
            raise EtcdAccessError(
                f"etcd user {self.user!r} has no password: give --etcd-password-file or {ENV_PASSWORD}"
            )
        if self.user is None and has_password:
            raise EtcdAccessError("an etcd password was given without a user: give --etcd-user too")
        for name in ("ca", "cert", "key", "password_file"):
            value = getattr(self, name)
            if value is not None and not os.access(value, os.R_OK):
                raise EtcdAccessError(f"{_OPTIONS[name][0]} {value}: cannot read it")
        return self

    def password(self) -> str | None:
        """Read the password (file, else environment); refuse a file others can read."""
        if self.password_file is not None:
            path = Path(self.password_file)
            try:
                mode = path.stat().st_mode
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise EtcdAccessError(f"--etcd-password-file {path}: cannot read: {exc.strerror}") from None
            if mode & stat.S_IROTH:
                raise EtcdAccessError(
                    f"--etcd-password-file {path} is readable by others (mode {stat.S_IMODE(mode):04o}); chmod o-r it"
                )
            secret = text.strip("\r\n")
            if not secret:
                raise EtcdAccessError(f"--etcd-password-file {path} is empty")
            return secret
        if self.password_env:
            return os.environ.get(ENV_PASSWORD) or None
        return None

    @property
    def secure(self) -> bool:
        return any(v is not None for v in (self.ca, self.cert, self.user))

    def child_args(self) -> list[str]:
        """Global ``callpark`` options that give a child process the same access."""
        argv: list[str] = []
        if self.endpoints is not None:
            argv += ["--etcd", self.endpoints]
        for name, (option, _) in _OPTIONS.items():
            value = getattr(self, name)
            if value is not None:
                argv += [option, str(value)]
        return argv  # a password from the environment reaches the child by inheritance

    def env(self) -> dict[str, str]:
        """The same settings as environment variables (for ``callpark up`` to print)."""
        return {
            ENV[f.name]: str(getattr(self, f.name)) for f in fields(self) if f.name in ENV and getattr(self, f.name)
        }

    def fill_from(self, other: EtcdAccess) -> EtcdAccess:
        """Settings of ``self``, with gaps filled from ``other`` (a deployment file)."""
        merged = {f.name: getattr(self, f.name) or getattr(other, f.name) for f in fields(self)}
        return replace(self, **merged)


def child_args(etcd: str | EtcdAccess) -> list[str]:
    """Global ``callpark`` options for a child process: plain endpoints or full settings."""
    return etcd.child_args() if isinstance(etcd, EtcdAccess) else ["--etcd", etcd]


class _RefusePassword(argparse.Action):
    """``--etcd-password``: refused without echoing the value (it would otherwise abbreviate
    ``--etcd-password-file`` and a password could end up in an error message or a log)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        parser.error(f"passwords are never taken on the command line: use --etcd-password-file or {ENV_PASSWORD}")


def add_cli_options(parser: argparse.ArgumentParser) -> None:
    """Add the credential options (``--etcd`` itself is the CLI's own)."""
    for name, (option, help_) in _OPTIONS.items():
        parser.add_argument(option, dest=f"etcd_{name}", metavar="FILE" if name != "user" else "NAME", help=help_)
    parser.add_argument("--etcd-password", nargs="?", action=_RefusePassword, help=argparse.SUPPRESS)


def from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> EtcdAccess:
    """Resolve the CLI options over the environment (no file is read here)."""
    env = os.environ if environ is None else environ
    values: dict[str, str | None] = {"endpoints": getattr(args, "etcd", None) or env.get(ENV["endpoints"])}
    for name in _OPTIONS:
        values[name] = getattr(args, f"etcd_{name}", None) or env.get(ENV[name]) or None
    return EtcdAccess(**values, password_env=values["password_file"] is None and bool(env.get(ENV_PASSWORD)))
