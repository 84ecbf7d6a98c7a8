"""JSON-lines protocol of the softphone process (``python -m callpark.lab.phone``).

stdin, one object per line: ``{"id": <any>, "cmd": "<name>", ...arguments}``.
stdout, one object per line, either a reply ``{"id": <same>, "ok": true, ...fields}`` /
``{"id": <same>, "ok": false, "error": "..."}`` or an event ``{"event": "<name>", ...}``.
Calls are named by phone-local handles ``"c1"``, ``"c2"``, ... (never reused).
A phone started with ``--auth-user`` (password in ``$CALLPARK_PHONE_PASSWORD``) answers 401/407
digest challenges of REGISTER, INVITE (also the INVITE a REFER makes it send) and MESSAGE.

Commands (reply fields after the arrow):
  ping                                          -> pong
  status                                        -> user, uri, sip_port, rtp_port, calls, reg_active
  register / unregister                         -> (then event reg_state)
  call        uri, headers?{name: value}        -> call
  answer      call, code?=200, headers?, sendonly?
  reject      call, code?=486, headers?, reason?
  redirect    call, contact, code?=302, headers? (the 3xx carries exactly this Contact)
  hangup      call, code?, headers?
  hangup_all
  blind_transfer     call, target, hangup?=true (REFER; our leg is hung up on the final 2xx NOTIFY)
  attended_transfer  call, replaces_call, hangup?=true -> refer_to
                     (REFER call's peer to replaces_call's remote Contact with Replaces of its dialog)
  calls       ended?=false                      -> calls[], ended[]
  call_info   call                              -> info (also for ended calls)
  received_message  call, which?=answer|invite|last -> message (raw SIP text or null)
  received_header   call, name, which?=answer|invite|last -> value
  messages                                      -> messages[] (received SIP MESSAGEs)
  send_message  to | call, body, content_type?=text/plain
  play_tone   call, freq, level?=0.5            -> path (looped 1 s PCM16 8 kHz tone)
  play_file   call, path, loop?=true            -> path
  stop_play   call
  record      call, seconds, path?              -> path, seconds, complete (reply comes when done)
  dtmf        call, digits                      (RFC 2833)
  set_auto_answer       code?=200 (null: off), headers?
  set_accept_redirects  accept                  (default true: 3xx are followed)
  set_accept_transfers  accept                  (default true: REFERs are followed; false: 603)
  quit                                          (reply, then events stopping, stopped; exit 0)

Events (each also has ``ts``, the phone's wall-clock time in seconds):
  ready          user, uri, sip_port, rtp_port, pid, work_dir
  reg_state      code, reason, expiration, active
  incoming       call, from, to, call_id, remote_contact, referred_by, supports_replaces, x_headers
  call_state     call, state (CALLING|INCOMING|EARLY|CONNECTING|CONFIRMED|DISCONNECTED), code, reason,
                 role (caller|callee), remote_uri, call_id; CONFIRMED adds remote_contact and, for
                 the caller, x_headers of the 2xx
  media_state    call, active (an audio port exists: play/record work), status (ACTIVE|LOCAL_HOLD|
                 REMOTE_HOLD|NONE|ERROR; a sendonly answer shows LOCAL_HOLD / REMOTE_HOLD), dir
  transfer_request  call, target, accepted, new_call (we were REFERred; new_call is the new leg)
  transfer_status   call, code, reason, final (we sent the REFER; NOTIFY progress)
  replace_request   call, new_call   (an INVITE with Replaces targets our call)
  replaced          call, new_call   (that INVITE replaced our call)
  redirected     call, target (port-less, as pjsua prints it), contact (the 3xx Contact), accepted
  message        from, to, contact, content_type, body, x_headers, call?
  message_status to, code, reason
  dtmf           call, digit
  callback_error where, error
  stopping / stopped  callback_errors
"""

from __future__ import annotations

from typing import Final

CALL_STATES: Final = ("NULL", "CALLING", "INCOMING", "EARLY", "CONNECTING", "CONFIRMED", "DISCONNECTED")
EVENTS: Final = (
    "ready",
    "reg_state",
    "incoming",
    "call_state",
    "media_state",
    "transfer_request",
    "transfer_status",
    "replace_request",
    "replaced",
    "redirected",
    "message",
    "message_status",
    "dtmf",
    "callback_error",
    "stopping",
    "stopped",
)
