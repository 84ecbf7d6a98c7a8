"""The chaos history: every workload operation and every fault, with start, end and result.

One JSON object per line in ``history.jsonl``. Times are wall-clock seconds
(``time.time()``) so they compare with the timestamps nodes write into etcd; the
checker never uses them for fencing, only for windows (RTO, overlap of parks).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Op:
    """One operation of one process (a phone pair, the nemesis, the probe, the runner).

    ``op`` is ``park``, ``retrieve``, ``abandon`` (the caller hangs up), ``timeout`` (nobody
    retrieves; the parker answers the ringback), ``probe`` (a park after a pool fault: RTO),
    ``fault``, ``heal`` or ``error``.
    """

    process: str
    op: str
    start: float
    end: float = 0.0
    ok: bool = False
    orbit: str = ""
    caller: str = ""  # the caller's user name (the party that was parked)
    park_id: str = ""
    connected_to: str = ""  # for retrieve: the user the retriever ended up talking to
    fault: str = ""  # for fault/heal/probe: the nemesis name
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in ("", {}, 0.0) or k in ("ok", "start", "end")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Op:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


class History:
    """A thread-safe, append-only history written to a JSONL file as it grows."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.ops: list[Op] = []
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")

    def begin(self, process: str, op: str, **fields: Any) -> Op:
        return Op(process=process, op=op, start=time.time(), **fields)

    def finish(self, op: Op, ok: bool, **fields: Any) -> Op:
        op.end = time.time()
        op.ok = ok
        for key, value in fields.items():
            setattr(op, key, value)
        self.add(op)
        return op

    def add(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)
            if self.path is not None:
                with self.path.open("a") as f:
                    f.write(json.dumps(op.to_json(), sort_keys=True) + "\n")

    def snapshot(self) -> list[Op]:
        with self._lock:
            return list(self.ops)

    @classmethod
    def load(cls, path: Path) -> list[Op]:
        return [Op.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
