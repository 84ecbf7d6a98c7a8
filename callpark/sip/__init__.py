"""Shared SIP layer: pure message helpers here; pjsua2 pieces in submodules.

- :mod:`callpark.sip.message`: pure parsing/building (headers, tags, URIs, Replaces,
  Refer-To, :class:`DialogTracker`); importing ``callpark.sip`` never imports pjsua2.
- :mod:`callpark.sip.wake`: wake a pumping pjsua2 process (CRLFCRLF to its SIP port).
- :mod:`callpark.sip.endpoint`: silent tuned endpoint, accounts, op params, clean shutdown.
- :mod:`callpark.sip.call`: :class:`~callpark.sip.call.TrackedCall`, a ``pj.Call`` that
  learns its dialog tags from raw messages.
- :mod:`callpark.sip.pump`: the main-thread event loop (pump, reader thread queue,
  deferred actions, timers) of a single-threaded pjsua2 process.
"""

from callpark.sip.message import (
    DialogTags,
    DialogTracker,
    NameAddr,
    Replaces,
    SipMessage,
    SipParseError,
    SipUri,
    call_id,
    contact_uri,
    from_tag,
    header_value,
    header_values,
    message_contact,
    parse_message,
    parse_name_addr,
    parse_replaces,
    parse_sip_uri,
    refer_to_with_replaces,
    referred_by_uri,
    replaces_value,
    sdp_with_ptime,
    supports_replaces,
    tag_of,
    to_tag,
)
from callpark.sip.wake import wake

__all__ = [
    "DialogTags",
    "DialogTracker",
    "NameAddr",
    "Replaces",
    "SipMessage",
    "SipParseError",
    "SipUri",
    "call_id",
    "contact_uri",
    "from_tag",
    "header_value",
    "header_values",
    "message_contact",
    "parse_message",
    "parse_name_addr",
    "parse_replaces",
    "parse_sip_uri",
    "refer_to_with_replaces",
    "referred_by_uri",
    "replaces_value",
    "sdp_with_ptime",
    "supports_replaces",
    "tag_of",
    "to_tag",
    "wake",
]
