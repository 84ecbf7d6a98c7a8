"""The parked-call record stored at ``parked/<orbit>``: everything another node needs.

A record is created with "create if absent" (one call per orbit) and every change is
a transaction guarded by the record's mod revision and the writer's lease (and, with
the disaster-recovery issue, the range owner's epoch).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, replace
from typing import Any

from callpark.errors import StoreDataError, ValidationError
from callpark.model.orbits import parse_orbit
from callpark.store.etcd import Keys, decode, encode
from callpark.store.records import flag, number, obj, opt_text, strict, text, whole


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
        """Strict: raises ``ValueError`` (``BadField``) on a missing or mistyped field."""
        return cls(
            call_id=text(data, "call_id"),
            local_tag=text(data, "local_tag"),
            remote_tag=text(data, "remote_tag"),
            remote_contact=text(data, "remote_contact"),
            remote_uri=text(data, "remote_uri"),
            supports_replaces=flag(data, "supports_replaces"),
        )


@dataclass(frozen=True)
class Holder:
    """Which node and worker hold the call, and the worker's SIP address for redirects."""

    node: str
    worker: int
    sip: str  # host:port of the worker

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Holder:
        return cls(node=text(data, "node"), worker=whole(data, "worker"), sip=text(data, "sip"))


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
        """Parse ``parked/<orbit>``; anything malformed raises :class:`StoreDataError` naming the key."""
        data = decode(key, raw)
        call = strict(key, lambda: cls._from_json(data))
        if key.startswith(Keys.PARKED) and key[len(Keys.PARKED) :] != call.orbit:
            raise StoreDataError(key, f"record names orbit {call.orbit[:20]!r}, not the orbit of its key")
        return call

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> ParkedCall:
        orbit = text(data, "orbit")
        try:
            parse_orbit(orbit)
        except ValidationError as exc:
            raise ValueError(f"orbit: {exc.message}") from None
        return cls(
            orbit=orbit,
            park_id=text(data, "park_id"),
            pool=text(data, "pool"),
            range=text(data, "range"),
            kind=ParkKind(text(data, "kind")),
            state=CallState(text(data, "state")),
            holder=Holder.from_json(obj(data, "holder")),
            dialog=Dialog.from_json(obj(data, "dialog")),
            caller_uri=text(data, "caller_uri"),
            parker_uri=opt_text(data, "parker_uri"),
            parked_at=number(data, "parked_at"),
            deadline=number(data, "deadline"),
            attempts=whole(data, "attempts"),
            owner_epoch=whole(data, "owner_epoch", default=0),
        )

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
