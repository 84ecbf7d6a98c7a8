"""The parked-call record stored at ``parked/<orbit>``: everything another node needs.

A record is created with "create if absent" (one call per orbit) and every change is
a transaction guarded by the record's mod revision and the writer's lease (and, with
the disaster-recovery issue, the range owner's epoch).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, replace
from typing import Any

from callpark.errors import StoreDataError
from callpark.store import decode, encode


class ParkKind(enum.StrEnum):
    BLIND = "blind"
    DIRECTED = "directed"
    ATTENDED = "attended"


class CallState(enum.StrEnum):
    PARKED = "parked"
    RETRIEVING = "retrieving"
    RINGING = "ringing"
    FORWARDING = "forwarding"


class Outcome(enum.StrEnum):
    """How a parked call ended (exactly one per park id)."""

    RETRIEVED = "retrieved"
    ABANDONED = "abandoned"
    RANG_BACK = "rang-back"
    FORWARDED = "forwarded"
    DISCONNECTED = "disconnected"
    LOST = "lost"


@dataclass(frozen=True)
class Dialog:
    """The holder's SIP dialog with the parked caller (what INVITE/Replaces needs)."""

    call_id: str
    local_tag: str
    remote_tag: str
    remote_contact: str
    remote_uri: str
    supports_replaces: bool

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Dialog:
        return cls(
            call_id=_s(data, "call_id"),
            local_tag=_s(data, "local_tag"),
            remote_tag=_s(data, "remote_tag"),
            remote_contact=_s(data, "remote_contact"),
            remote_uri=_s(data, "remote_uri"),
            supports_replaces=bool(data.get("supports_replaces", False)),
        )


@dataclass(frozen=True)
class Holder:
    """Which node and worker hold the call, and the worker's SIP address for redirects."""

    node: str
    worker: int
    sip: str  # host:port of the worker

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Holder:
        worker = data.get("worker")
        if not isinstance(worker, int) or isinstance(worker, bool):
            raise ValueError("holder.worker must be an integer")
        return cls(node=_s(data, "node"), worker=worker, sip=_s(data, "sip"))


@dataclass(frozen=True)
class ParkedCall:
    """One parked call. Times are wall-clock epoch seconds (they cross machines)."""

    orbit: str
    park_id: str
    pool: str
    range: str
    kind: ParkKind
    state: CallState
    holder: Holder
    dialog: Dialog
    caller_uri: str
    parker_uri: str | None
    parked_at: float
    deadline: float
    attempts: int
    owner_epoch: int = 0

    def to_bytes(self) -> bytes:
        data = asdict(self)
        data["kind"] = self.kind.value
        data["state"] = self.state.value
        return encode(data)

    @classmethod
    def from_bytes(cls, key: str, raw: bytes) -> ParkedCall:
        data = decode(key, raw)
        try:
            parker = data.get("parker_uri")
            return cls(
                orbit=_s(data, "orbit"),
                park_id=_s(data, "park_id"),
                pool=_s(data, "pool"),
                range=_s(data, "range"),
                kind=ParkKind(data["kind"]),
                state=CallState(data["state"]),
                holder=Holder.from_json(data["holder"]),
                dialog=Dialog.from_json(data["dialog"]),
                caller_uri=_s(data, "caller_uri"),
                parker_uri=None if parker is None else str(parker),
                parked_at=float(data["parked_at"]),
                deadline=float(data["deadline"]),
                attempts=int(data["attempts"]),
                owner_epoch=int(data.get("owner_epoch", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreDataError(key, f"{exc.__class__.__name__}: {exc}") from None

    def with_state(self, state: CallState) -> ParkedCall:
        return replace(self, state=state)

    def summary(self, now: float) -> dict[str, Any]:
        """What operators see of a parked call (``parked list``, ``/api/parked``)."""
        return {
            "orbit": self.orbit,
            "park_id": self.park_id,
            "state": self.state.value,
            "caller": self.caller_uri,
            "parker": self.parker_uri,
            "parked_for_s": round(now - self.parked_at, 1),
            "next_ringback_in_s": round(self.deadline - now, 1),
            "ringbacks": self.attempts,
            "holder": f"{self.holder.node}/w{self.holder.worker}",
            "pool": self.pool,
        }


def _s(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value
