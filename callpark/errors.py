"""The project's exception hierarchy. Every user-facing error names what is wrong."""

from __future__ import annotations


class CallparkError(Exception):
    """Base class of every error callpark raises on purpose."""


class ValidationError(CallparkError):
    """Input that breaks a rule; ``rule`` is a stable kebab-case id of that rule."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message}"


class NotFound(CallparkError):
    """A named object (pool, range, settings scope) does not exist."""


class StoreError(CallparkError):
    """etcd could not be used (translated from the client's errors)."""


class StoreUnavailable(StoreError):
    """No etcd endpoint answered within the retry deadline."""


class StoreIndeterminate(StoreError):
    """A write timed out: it may or may not have been applied."""


class StoreAuthError(StoreError):
    """etcd refused our credentials (TLS handshake, user or password, permission)."""


class StoreConflict(StoreError):
    """A guarded transaction kept losing races; the caller may retry later."""


class StoreDataError(StoreError):
    """A record in etcd is malformed (truncated, wrong types, unknown version)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"malformed record at {key}: {problem}")
        self.key = key
        self.problem = problem
