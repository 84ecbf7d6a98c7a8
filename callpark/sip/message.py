"""Pure SIP text helpers (no pjsua2): headers, tags, URIs, Replaces and Refer-To.

pjsua2 hides dialog tags (``CallInfo`` has none) and prints From/To URIs without their
port, so the park service reads what it needs from raw messages (``wholeMsg``) and
builds its own Replaces / Refer-To values. Everything here works on plain ``str``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

# RFC 3261 section 7.3.3 compact header forms (plus the REFER/event ones).
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "r": "refer-to",
    "b": "referred-by",
    "o": "event",
    "u": "allow-events",
    "x": "session-expires",
}

# Headers whose value is a comma-separated list (RFC 3261 7.3.1); others are single-valued.
LIST_HEADERS = frozenset(
    {
        "contact",
        "supported",
        "require",
        "allow",
        "via",
        "route",
        "record-route",
        "proxy-require",
        "unsupported",
        "allow-events",
        "accept",
        "accept-encoding",
        "accept-language",
    }
)


class SipParseError(ValueError):
    """Text that is not the SIP element it was supposed to be."""


def canonical_name(name: str) -> str:
    """Lower-case header name with compact forms expanded (``i`` -> ``call-id``)."""
    low = name.strip().lower()
    return COMPACT_FORMS.get(low, low)


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class SipMessage:
    """A parsed SIP message: start line, headers in order (names as written), body."""

    start_line: str
    headers: tuple[tuple[str, str], ...]
    body: str = ""

    @property
    def is_request(self) -> bool:
        return not self.start_line.startswith("SIP/")

    @property
    def is_response(self) -> bool:
        return not self.is_request

    @property
    def request_uri(self) -> str | None:
        """Request-URI of a request, or None for a response."""
        return self.start_line.split(" ", 2)[1] if self.is_request else None

    @property
    def reason(self) -> str:
        """Reason phrase of a response (``""`` for a request or a response without one)."""
        parts = self.start_line.split(" ", 2)
        return parts[2] if self.is_response and len(parts) > 2 else ""

    @property
    def method(self) -> str | None:
        """Request method (``INVITE``), or None for a response."""
        return self.start_line.split(" ", 1)[0].upper() if self.is_request else None

    @property
    def status_code(self) -> int | None:
        """Response status code, or None for a request."""
        if self.is_request:
            return None
        parts = self.start_line.split(" ", 2)
        try:
            return int(parts[1])
        except (IndexError, ValueError):
            return None

    @property
    def cseq_method(self) -> str | None:
        value = self.header("CSeq")
        if value is None:
            return None
        parts = value.split()
        return parts[1].upper() if len(parts) >= 2 else None

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive, compact forms understood)."""
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        """Every value of ``name``; list headers (Contact, Supported, ...) are split at commas."""
        wanted = canonical_name(name)
        out: list[str] = []
        for hname, value in self.headers:
            if canonical_name(hname) != wanted:
                continue
            if wanted in LIST_HEADERS:
                out.extend(v for v in split_list(value) if v)
            else:
                out.append(value)
        return out


_START_LINE = re.compile(r"^(?:[A-Za-z]+ \S+ SIP/2\.0|SIP/2\.0 \d{3}(?: .*)?)$")


def parse_message(raw: str) -> SipMessage:
    """Parse a raw SIP message (CRLF or LF line ends, folded header lines allowed)."""
    text = raw.lstrip("\r\n")
    head, sep, body = text.partition("\r\n\r\n")
    if not sep:
        head, sep, body = text.partition("\n\n")
    lines = head.replace("\r\n", "\n").split("\n")
    if not lines or not lines[0].strip():
        raise SipParseError("empty SIP message")
    start = lines[0].strip()
    if not _START_LINE.match(start):
        raise SipParseError(f"not a SIP start line: {start[:80]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line.strip():
            continue
        if line[0] in " \t" and headers:  # folded continuation line
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"malformed header line: {line!r}")
        headers.append((name.strip(), value.strip()))
    return SipMessage(start_line=start, headers=tuple(headers), body=body)


def parse_datagram(data: bytes) -> SipMessage:
    """Parse one SIP message received as a datagram (UTF-8; undecodable bytes replaced)."""
    return parse_message(data.decode("utf-8", errors="replace"))


def header_values(raw: str, name: str) -> list[str]:
    """All values of header ``name`` in raw message ``raw``."""
    return parse_message(raw).header_values(name)


def header_value(raw: str, name: str) -> str | None:
    """First value of header ``name`` in raw message ``raw``, or None."""
    return parse_message(raw).header(name)


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas in quotes or ``<...>``."""
    items: list[str] = []
    buf: list[str] = []
    in_quote = False
    depth = 0
    escaped = False
    for ch in value:
        if escaped:
            buf.append(ch)
            escaped = False
            continue
        if in_quote:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                in_quote = False
            buf.append(ch)
            continue
        if ch == '"':
            in_quote = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            items.append("".join(buf).strip())
            buf = []
            continue
        buf.append(ch)
    items.append("".join(buf).strip())
    return [item for item in items if item]


# --------------------------------------------------------------------------- URIs


def unescape_orbit_user(user: str) -> str:
    """A request-user with the URI escapes of an orbit prefix decoded (``%2A`` -> ``*``,
    ``%23`` -> ``#``); phones escape ``*`` and ``#`` in user parts, Lync orbits start with them."""
    return user.replace("%2A", "*").replace("%2a", "*").replace("%23", "#")


@dataclass(frozen=True)
class SipUri:
    """A sip:/sips: URI. ``params`` and ``headers`` keep order; values are None for flags."""

    host: str
    user: str | None = None
    port: int | None = None
    scheme: str = "sip"
    params: tuple[tuple[str, str | None], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    password: str | None = None

    @property
    def hostport(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key.lower() == name.lower():
                return value if value is not None else ""
        return None

    def uri_header(self, name: str) -> str | None:
        """Decoded value of URI header ``name`` (``?Replaces=...``)."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return unquote(value)
        return None

    def with_header(self, name: str, value: str) -> SipUri:
        """A copy with URI header ``name`` set to ``value`` (escaped here)."""
        kept = tuple((k, v) for k, v in self.headers if k.lower() != name.lower())
        return SipUri(
            self.host,
            self.user,
            self.port,
            self.scheme,
            self.params,
            (*kept, (name, quote(value, safe=""))),
            self.password,
        )

    def without_headers(self) -> SipUri:
        return SipUri(self.host, self.user, self.port, self.scheme, self.params, (), self.password)

    def __str__(self) -> str:
        out = f"{self.scheme}:"
        if self.user is not None:
            out += self.user
            if self.password is not None:
                out += f":{self.password}"
            out += "@"
        out += self.hostport
        for key, value in self.params:
            out += f";{key}" if value is None else f";{key}={value}"
        if self.headers:
            out += "?" + "&".join(f"{k}={v}" for k, v in self.headers)
        return out


_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(\d{1,5}))?$")


def parse_sip_uri(text: str) -> SipUri:
    """Parse ``sip:user@host:port;params?headers`` (also accepts ``<...>`` around it)."""
    s = text.strip()
    if s.startswith("<") and s.endswith(">"):
        s = s[1:-1].strip()
    scheme, colon, rest = s.partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        raise SipParseError(f"not a sip URI: {text!r}")
    rest, _, hdr_text = rest.partition("?")
    userinfo: str | None = None
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
    hostport, *param_parts = rest.split(";")
    match = _HOST_PORT.match(hostport)
    if match is None or not match.group(1):
        raise SipParseError(f"bad host/port in {text!r}")
    port = int(match.group(2)) if match.group(2) else None
    if port is not None and not 0 < port < 65536:
        raise SipParseError(f"bad port in {text!r}")
    user: str | None = None
    password: str | None = None
    if userinfo is not None:
        user, pcolon, pw = userinfo.partition(":")
        password = pw if pcolon else None
    params: list[tuple[str, str | None]] = []
    for part in param_parts:
        if not part:
            continue
        key, eq, value = part.partition("=")
        params.append((key, value if eq else None))
    headers: list[tuple[str, str]] = []
    if hdr_text:
        for part in hdr_text.split("&"):
            if part:
                key, _, value = part.partition("=")
                headers.append((key, value))
    return SipUri(
        host=match.group(1),
        user=user,
        port=port,
        scheme=scheme.lower(),
        params=tuple(params),
        headers=tuple(headers),
        password=password,
    )


@dataclass(frozen=True)
class NameAddr:
    """A name-addr / addr-spec header value: ``"Name" <uri>;param=value``."""

    uri: str
    display_name: str | None = None
    params: tuple[tuple[str, str | None], ...] = ()

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key.lower() == name.lower():
                return value if value is not None else ""
        return None

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    def sip_uri(self) -> SipUri:
        return parse_sip_uri(self.uri)


def _split_params(text: str) -> tuple[tuple[str, str | None], ...]:
    out: list[tuple[str, str | None]] = []
    for part in _split_outside_quotes(text, ";"):
        part = part.strip()
        if not part:
            continue
        key, eq, value = part.partition("=")
        value = value.strip()
        if eq and len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out.append((key.strip(), value if eq else None))
    return tuple(out)


def _split_outside_quotes(text: str, sep: str) -> Iterator[str]:
    buf: list[str] = []
    in_quote = False
    for ch in text:
        if ch == '"':
            in_quote = not in_quote
        if ch == sep and not in_quote:
            yield "".join(buf)
            buf = []
            continue
        buf.append(ch)
    yield "".join(buf)


def parse_name_addr(value: str) -> NameAddr:
    """Parse a From/To/Contact/Referred-By/Refer-To value into URI, display name, params.

    Without angle brackets, everything after the first ``;`` is a header parameter
    (RFC 3261 20.10), so ``sip:a@b;tag=x`` has the tag ``x``.
    """
    s = value.strip()
    if not s:
        raise SipParseError("empty name-addr")
    lt = _find_outside_quotes(s, "<")
    if lt >= 0:
        gt = s.find(">", lt)
        if gt < 0:
            raise SipParseError(f"unterminated <...> in {value!r}")
        display = s[:lt].strip()
        if len(display) >= 2 and display[0] == display[-1] == '"':
            display = display[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        return NameAddr(
            uri=s[lt + 1 : gt].strip(),
            display_name=display or None,
            params=_split_params(s[gt + 1 :].lstrip().removeprefix(";")),
        )
    uri, _, rest = s.partition(";")
    return NameAddr(uri=uri.strip(), params=_split_params(rest))


def _find_outside_quotes(text: str, ch: str) -> int:
    in_quote = False
    escaped = False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
            continue
        if c == "\\" and in_quote:
            escaped = True
        elif c == '"':
            in_quote = not in_quote
        elif c == ch and not in_quote:
            return i
    return -1


def tag_of(header: str | None) -> str | None:
    """The ``tag`` parameter of a From/To header value (None if absent or empty)."""
    if not header:
        return None
    try:
        tag = parse_name_addr(header).tag
    except SipParseError:
        return None
    return tag or None


def from_tag(raw: str) -> str | None:
    """From tag of raw message ``raw``."""
    return tag_of(header_value(raw, "From"))


def to_tag(raw: str) -> str | None:
    """To tag of raw message ``raw`` (None in an initial request or a 100 Trying)."""
    return tag_of(header_value(raw, "To"))


def call_id(raw: str) -> str | None:
    """Call-ID of raw message ``raw``."""
    return header_value(raw, "Call-ID")


def has_option_tag(raw: str, tag: str, headers: tuple[str, ...] = ("Supported", "Require")) -> bool:
    """Whether option tag ``tag`` is listed in any of ``headers`` (case-insensitive)."""
    msg = parse_message(raw)
    wanted = tag.lower()
    return any(v.strip().lower() == wanted for h in headers for v in msg.header_values(h))


def supports_replaces(raw: str) -> bool:
    """Whether the sender says ``replaces`` in Supported or Require."""
    return has_option_tag(raw, "replaces")


def referred_by_uri(raw: str) -> str | None:
    """URI of the Referred-By header (angle brackets and params stripped), or None."""
    value = header_value(raw, "Referred-By")
    if value is None:
        return None
    try:
        return parse_name_addr(value).uri
    except SipParseError:
        return None


def in_domains(uri: str, domains: Iterable[str]) -> bool:
    """Whether ``uri`` (a URI or name-addr) is a SIP URI whose host is one of ``domains``.

    Ringbacks, orbit MESSAGEs and OnTimeoutURI transfers go only to such URIs (no toll fraud).
    """
    try:
        host = parse_sip_uri(parse_name_addr(uri).uri).host.lower()
    except SipParseError:
        return False
    return host in {d.lower() for d in domains}


def contact_uri(value: str) -> SipUri:
    """The SIP URI inside a Contact header value (port kept)."""
    first = split_list(value)
    if not first:
        raise SipParseError("empty Contact")
    return parse_name_addr(first[0]).sip_uri()


def message_contact(raw: str) -> SipUri | None:
    """The first Contact URI of raw message ``raw``, or None."""
    value = header_value(raw, "Contact")
    if value is None or value.strip() == "*":
        return None
    try:
        return contact_uri(value)
    except SipParseError:
        return None


# --------------------------------------------------------------------------- Replaces


@dataclass(frozen=True)
class Replaces:
    """A Replaces header value (RFC 3891): the dialog to replace, seen by its recipient."""

    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False

    def __str__(self) -> str:
        return replaces_value(self.call_id, to_tag=self.to_tag, from_tag=self.from_tag, early_only=self.early_only)


def replaces_value(call_id: str, *, to_tag: str, from_tag: str, early_only: bool = False) -> str:
    """Build ``callid;to-tag=X;from-tag=Y`` (``;early-only`` optionally)."""
    if not call_id or not to_tag or not from_tag:
        raise ValueError("Replaces needs a Call-ID, a to-tag and a from-tag")
    value = f"{call_id};to-tag={to_tag};from-tag={from_tag}"
    return value + ";early-only" if early_only else value


def parse_replaces(value: str) -> Replaces:
    """Parse a Replaces header value (or the decoded ``?Replaces=`` URI header).

    The value must already be unescaped (:meth:`SipUri.uri_header` does that): a
    Call-ID may itself contain ``%``.
    """
    cid, _, rest = value.strip().partition(";")
    params = dict((k.lower(), v) for k, v in _split_params(rest))
    to = params.get("to-tag")
    frm = params.get("from-tag")
    if not cid or not to or not frm:
        raise SipParseError(f"incomplete Replaces: {value!r}")
    return Replaces(call_id=cid.strip(), to_tag=to, from_tag=frm, early_only="early-only" in params)


def refer_to_with_replaces(remote_contact: str, replaces: str | Replaces) -> str:
    """Refer-To for an attended transfer: ``<contact-uri?Replaces=url-encoded>``.

    ``remote_contact`` is the Contact of the party that must accept the Replaces (for
    pjsua2, ``CallInfo.remoteContact``; it keeps the port, unlike ``remoteUri``).
    """
    uri = contact_uri(remote_contact).with_header("Replaces", str(replaces))
    return f"<{uri}>"


# --------------------------------------------------------------------------- dialogs


@dataclass(frozen=True)
class DialogTags:
    """One side's view of a dialog: Call-ID and its local and remote tags."""

    call_id: str
    local_tag: str
    remote_tag: str

    def replaces_for_peer(self) -> Replaces:
        """The Replaces a third party sends to *our peer* to take this dialog over.

        The recipient is our peer, so to-tag = our remote tag, from-tag = our local tag
        (the swapped order gets 481).
        """
        return Replaces(self.call_id, to_tag=self.remote_tag, from_tag=self.local_tag)


@dataclass
class DialogTracker:
    """Learns a call's dialog identifiers from the raw messages it sends and receives.

    Feed every in-dialog message with ``sent=True`` for what we transmit. Local tag is
    the From tag of requests we send / responses we receive, and the To tag of requests
    we receive / responses we send; the remote tag is the other one.
    """

    call_id: str | None = None
    local_tag: str | None = None
    remote_tag: str | None = None
    remote_contact: str | None = None
    remote_supports_replaces: bool | None = None
    remote_referred_by: str | None = None
    first_request: str | None = field(default=None, repr=False)

    def observe(self, raw: str, *, sent: bool) -> SipMessage | None:
        """Record what ``raw`` tells about the dialog; returns the parsed message."""
        try:
            msg = parse_message(raw)
        except SipParseError:
            return None
        cid = msg.header("Call-ID")
        if cid:
            self.call_id = cid
        ftag = tag_of(msg.header("From"))
        ttag = tag_of(msg.header("To"))
        ours_from = sent == msg.is_request  # we sent the request / we got the response
        local, remote = (ftag, ttag) if ours_from else (ttag, ftag)
        if local:
            self.local_tag = local
        if remote:
            self.remote_tag = remote
        if msg.is_request and self.first_request is None:
            self.first_request = raw
        if not sent:
            self._observe_received(msg)
        return msg

    def _observe_received(self, msg: SipMessage) -> None:
        code = msg.status_code
        target_refresh = msg.method in ("INVITE", "UPDATE") or (
            code is not None and 200 <= code < 300 and msg.cseq_method in ("INVITE", "UPDATE")
        )
        contact = msg.header("Contact")
        if contact and target_refresh:
            self.remote_contact = contact
        if msg.method == "INVITE" or (code is not None and 200 <= code < 300 and msg.cseq_method == "INVITE"):
            options = [v.lower() for h in ("Supported", "Require") for v in msg.header_values(h)]
            if options or self.remote_supports_replaces is None:
                self.remote_supports_replaces = "replaces" in options
        if msg.method == "INVITE":
            rb = msg.header("Referred-By")
            if rb:
                with contextlib.suppress(SipParseError):
                    self.remote_referred_by = parse_name_addr(rb).uri

    @property
    def tags(self) -> DialogTags | None:
        """The dialog identifiers, once all three are known."""
        if self.call_id and self.local_tag and self.remote_tag:
            return DialogTags(self.call_id, self.local_tag, self.remote_tag)
        return None


# --------------------------------------------------------------------------- SDP


def sdp_with_ptime(sdp: str, ptime_ms: int) -> str:
    """Add (or replace) ``a=ptime`` in every audio media section of an SDP body."""
    eol = "\r\n" if "\r\n" in sdp else "\n"
    lines = sdp.split(eol)
    trailing = lines and lines[-1] == ""
    if trailing:
        lines = lines[:-1]
    out: list[str] = []
    in_audio = False
    for line in lines:
        if line.startswith("m="):
            if in_audio:
                out.append(f"a=ptime:{ptime_ms}")
            in_audio = line.startswith("m=audio")
        if in_audio and line.startswith("a=ptime:"):
            continue
        out.append(line)
    if in_audio:
        out.append(f"a=ptime:{ptime_ms}")
    return eol.join(out) + (eol if trailing else "")
