"""JSON-RPC client for Kamailio's jsonrpcs datagram transport (UNIX socket or UDP)."""

from __future__ import annotations

import itertools
import json
import socket
from dataclasses import dataclass
from typing import Any

__all__ = ["DispatcherTarget", "RpcError", "call", "parse_dispatcher_list", "parse_ul_dump"]

_ids = itertools.count(1)


class RpcError(RuntimeError):
    """The RPC failed: no answer, or a JSON-RPC error object."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def call(endpoint: str, method: str, *params: Any, timeout: float = 2.0) -> Any:
    """Call ``method`` on the jsonrpcs server at ``endpoint`` and return its ``result``.

    :param endpoint: an absolute UNIX datagram socket path or ``udp:<ip>:<port>``.
    :raises RpcError: on timeout, transport failure or a JSON-RPC error reply.
    """
    request_id = next(_ids)
    payload = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": request_id})
    if endpoint.startswith("udp:"):
        host, _, port = endpoint[4:].rpartition(":")
        family = socket.AF_INET
        address: Any = (host, int(port))
        bind_to: Any = (host, 0)
    else:
        family = socket.AF_UNIX
        address = endpoint
        bind_to = ""  # Linux autobind: an abstract address the server can answer to
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind(bind_to)
        sock.settimeout(timeout)
        try:
            sock.sendto(payload.encode(), address)
            data = sock.recv(1 << 20)
        except OSError as exc:
            raise RpcError(f"{method} via {endpoint}: {exc}") from exc
    try:
        reply = json.loads(data.decode("utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        raise RpcError(f"{method}: reply is not JSON: {data[:200]!r}") from exc
    if "error" in reply:
        err = reply["error"]
        code = err.get("code") if isinstance(err, dict) else None
        text = err.get("message") if isinstance(err, dict) else str(err)
        raise RpcError(f"{method}: {text}", code)
    return reply.get("result")


@dataclass(frozen=True)
class DispatcherTarget:
    """One destination from ``dispatcher.list``: set id, URI and state flags (e.g. ``AP``)."""

    set_id: int
    uri: str
    flags: str

    @property
    def active(self) -> bool:
        """True for an active (A) destination; I = inactive, T = trying, D = disabled."""
        return self.flags.startswith("A")

    @property
    def address(self) -> str:
        """``host:port`` of the destination."""
        return self.uri.removeprefix("sip:").split(";", 1)[0]


def parse_dispatcher_list(result: Any) -> list[DispatcherTarget]:
    """Flatten the result of ``dispatcher.list`` into targets (empty when no sets are loaded)."""
    targets: list[DispatcherTarget] = []
    if not isinstance(result, dict):
        return targets
    for record in result.get("RECORDS") or []:
        group = record.get("SET", {}) if isinstance(record, dict) else {}
        set_id = int(group.get("ID", 0))
        for entry in group.get("TARGETS") or []:
            dest = entry.get("DEST", {}) if isinstance(entry, dict) else {}
            targets.append(DispatcherTarget(set_id, str(dest.get("URI", "")), str(dest.get("FLAGS", ""))))
    return targets


def parse_ul_dump(result: Any) -> dict[str, list[str]]:
    """Map each registered AOR to its contact URIs, from the result of ``ul.dump``."""
    out: dict[str, list[str]] = {}
    if not isinstance(result, dict):
        return out
    for domain in result.get("Domains") or []:
        info = domain.get("Domain", {}) if isinstance(domain, dict) else {}
        for record in info.get("AoRs") or []:
            info_aor = record.get("Info", {}) if isinstance(record, dict) else {}
            aor = str(info_aor.get("AoR", ""))
            contacts = []
            for contact in info_aor.get("Contacts") or []:
                c = contact.get("Contact", {}) if isinstance(contact, dict) else {}
                if "Address" in c:
                    contacts.append(str(c["Address"]))
            if aor:
                out.setdefault(aor, []).extend(contacts)
    return out
