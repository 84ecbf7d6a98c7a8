"""The supervisor <-> worker channel: one JSON object per line over a socketpair.

The worker holds SIP calls (pjsua2); the supervisor owns etcd. Neither blocks the
other: a worker that needs a decision (park, retrieve) sends a request with a ``req``
id and keeps pumping SIP; the supervisor answers with ``reply`` carrying the same id.

Worker -> supervisor
  ``ready``      {sip, rtp_base, slots}                       worker is up
  ``slots``      {free}                                       free call slots changed
  ``park``       {req, call, target, referred_by, from_uri, contact, supports_replaces, peer, origin?}
                 target is "park" (any orbit) or an orbit (directed park)
  ``retrieve``   {req, call, orbit, from_uri, contact, supports_replaces, park_id?, peer, origin?}
                 peer: ip:port the INVITE came from; origin: its X-Callpark-Source header
  ``untrusted``  {peer, what}                                 refused a request from an untrusted peer (403)
  ``answered``   {call, orbit, dialog}                        parked call is up; dialog = records.Dialog
  ``ended``      {call, orbit?, reason}                       a call left (caller-hangup, retrieved,
                                                              rang-back, forwarded, disconnected, failed)
  ``ringback_result`` {orbit, result}                         answered | no-answer | failed
  ``takeover_result`` {orbit, ok, reason, code?, dialog?, full?} (full: no free slot; the node tries
    another worker; code: the SIP answer of a failed INVITE)
  ``log``        {level, message}

Supervisor -> worker
  ``reply``      {req, action, ...}  action is one of
                 answer   {orbit, park_id, retrieve_uri, music, music_path?, announce?}
                          answer the park INVITE (reason "Parked on <orbit>"), hold with music:
                          music_path is the orbit's home pool's music; announce a WAV to play
                          first (attended park: "parked on <orbit>" to the parker)
                 connect  {orbit}                             retrieval: this worker holds the orbit
                 redirect {contact}                           302 to another worker or node
                 reject   {code, reason, warning, retry_after?} final error response
  ``ringback``   {orbit, parker_uri, ring_time_s}
  ``forward``    {orbit, uri}                                 blind transfer to OnTimeoutURI
  ``disconnect`` {orbit}                                      hang up the parked caller
  ``release``    {orbit}                                      forget the call without signalling etcd
  ``takeover``   {orbit, park_id, dialog, music, music_path?}  INVITE with Replaces to the caller
  ``announce``   {uri, orbit, path, ring_time_s}              call a blind parker, play path, hang up
  ``notify``     {uri, text, orbit, park_id, retrieve_uri}    SIP MESSAGE (the orbit to the parker)
                 or {uri, text, orbit, park_id, event, by}    a parker notice (node/notify.py)
  ``music``      {path}                                       the WAV to play on hold
  ``shutdown``   {}
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from typing import Any

# Reason phrases of the 503s a node gives when it cannot reach etcd: defined in the core
# because the edge matches on them too.
from callpark.sip.reasons import ETCD_TROUBLE_REASONS as ETCD_TROUBLE_REASONS
from callpark.sip.reasons import REASON_FENCED as REASON_FENCED
from callpark.sip.reasons import REASON_STATE_UNAVAILABLE as REASON_STATE_UNAVAILABLE

# records.py imports neither gRPC nor the etcd client, so the worker may use the one Dialog type
from callpark.store.records import Dialog

Message = dict[str, Any]

MAX_LINE = 64 * 1024


def dialog_json(dialog: Dialog) -> Message:
    """The ``dialog`` object of ``answered``, ``redialog``, ``takeover`` and ``takeover_result``.

    The one place a dialog becomes JSON, on both sides of the channel; the supervisor reads
    it back strictly with ``Dialog.from_json``.
    """
    return {
        "call_id": dialog.call_id,
        "local_tag": dialog.local_tag,
        "remote_tag": dialog.remote_tag,
        "remote_contact": dialog.remote_contact,
        "remote_uri": dialog.remote_uri,
        "supports_replaces": dialog.supports_replaces,
    }


class ChannelClosed(Exception):
    """The other end of the channel went away."""


class Channel:
    """Line-delimited JSON over a connected stream socket; ``send`` is thread-safe."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self._reader = sock.makefile("rb")

    def send(self, op: str, **fields: Any) -> None:
        line = json.dumps({"op": op, **fields}, separators=(",", ":")).encode() + b"\n"
        with self._send_lock:
            try:
                self.sock.sendall(line)
            except OSError as exc:
                raise ChannelClosed(str(exc)) from None

    def receive(self) -> Message:
        """Block until one message arrives; raise :class:`ChannelClosed` at EOF."""
        try:
            line = self._reader.readline(MAX_LINE + 1)
        except OSError as exc:
            raise ChannelClosed(str(exc)) from None
        if not line:
            raise ChannelClosed("end of stream")
        if len(line) > MAX_LINE:
            raise ChannelClosed("message too long")
        try:
            msg = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise ChannelClosed("malformed message") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
            raise ChannelClosed("message without op")
        return msg

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        """Close both directions; a thread blocked in :meth:`receive` gets end of stream."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
