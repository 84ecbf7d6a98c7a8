"""One silent, tuned pjsua2 endpoint per process, its accounts, and its clean shutdown.

pjsua is a singleton: a process holds one :class:`SipEndpoint`. Fork (if you fork)
*before* :meth:`SipEndpoint.start`. Everything pjsua2-specific that the phone and the
park node workers share lives here, in :mod:`callpark.sip.call` and (the event loop) in
:mod:`callpark.sip.pump`.

Contract of the default configuration (see platform-facts.md): callbacks run on the
thread that calls :meth:`SipEndpoint.pump` (``threadCnt=0``, ``mainThreadOnly``), RTP
shares the SIP ioqueue (``hasIoqueue=False``) so the same pump drives it, PCMU only
with an 8 kHz conference bridge. Each tuning knob is a flag of :class:`MediaTuning`.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pjsua2 as pj

from callpark.sip.wake import wake

log = logging.getLogger(__name__)

PJSUA_MAX_CALLS = 4
"""Compile-time cap of the pjsua2-python wheel (larger ``maxCalls`` is clamped)."""

# pjlib log level -> Python logging level
_PJ_TO_PY = {
    0: logging.CRITICAL,
    1: logging.ERROR,
    2: logging.WARNING,
    3: logging.INFO,
    4: logging.DEBUG,
    5: logging.DEBUG,
    6: logging.DEBUG,
}


def silence_native_logs() -> None:
    """Set pjlib's log level to 0 before ``libCreate`` prints anything.

    ``libCreate`` logs before any ``LogConfig`` applies; the exported C function
    ``pj_log_set_level`` on the already-loaded extension module silences it.
    """
    import pjsua2._pjsua2 as ext

    ctypes.CDLL(ext.__file__).pj_log_set_level(0)


class PyLogWriter(pj.LogWriter):  # type: ignore[misc]
    """Routes pjlib log lines to a Python logger (level mapped from pjlib's 1..6)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = logger

    def write(self, entry: Any) -> None:
        with contextlib.suppress(Exception):  # never raise into pjlib
            self._logger.log(_PJ_TO_PY.get(int(entry.level), logging.DEBUG), "%s", entry.msg.rstrip())


@dataclass(frozen=True)
class MediaTuning:
    """Cost knobs, each independently switchable so they can be measured.

    ``single_thread``: ``uaConfig.threadCnt=0``, ``mainThreadOnly=True``, media
    ``threadCnt=0``; callbacks run inside :meth:`SipEndpoint.pump`.
    ``has_ioqueue=False``: RTP shares the SIP ioqueue (so the pump also reads RTP).
    """

    pcmu_only: bool = True
    clock_rate: int | None = 8000
    single_thread: bool = True
    has_ioqueue: bool = False
    audio_frame_ptime: int | None = None
    ptime: int | None = None
    no_vad: bool | None = None

    @classmethod
    def defaults(cls) -> MediaTuning:
        """pjsua's own defaults (speex first, 16 kHz bridge, worker threads)."""
        return cls(pcmu_only=False, clock_rate=None, single_thread=False, has_ioqueue=True)


@dataclass(frozen=True)
class EndpointConfig:
    """Where and how the endpoint listens. ``pj_log_level=None`` keeps pjlib silent."""

    sip_port: int
    host: str = "127.0.0.1"
    tuning: MediaTuning = field(default_factory=MediaTuning)
    pj_log_level: int | None = None
    logger_name: str = "callpark.pjsip"
    max_calls: int = PJSUA_MAX_CALLS
    user_agent: str = "callpark"
    null_audio: bool = True
    tls_ca: str | None = None  # also open a SIP TLS transport that trusts only this CA (PEM)


class SipEndpoint:
    """The process's pjsua2 ``Endpoint`` plus its UDP transport."""

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.ep: Any = None
        self.transport_id: int | None = None
        self.tls_transport_id: int | None = None
        self._log_writer: PyLogWriter | None = None
        self._destroyed = False

    @property
    def sip_port(self) -> int:
        return self.config.sip_port

    def start(self) -> SipEndpoint:
        """Create, init and start the library silently; bind UDP on host:sip_port."""
        cfg = self.config
        silence_native_logs()
        ep = pj.Endpoint()
        ep.libCreate()
        self.ep = ep
        ep_cfg = pj.EpConfig()
        ep_cfg.logConfig.level = 0 if cfg.pj_log_level is None else cfg.pj_log_level
        ep_cfg.logConfig.consoleLevel = ep_cfg.logConfig.level
        ep_cfg.logConfig.msgLogging = False
        if cfg.pj_log_level is not None and cfg.pj_log_level > 0:
            self._log_writer = PyLogWriter(logging.getLogger(cfg.logger_name))
            ep_cfg.logConfig.writer = self._log_writer
            ep_cfg.logConfig.msgLogging = cfg.pj_log_level >= 5
        ua = ep_cfg.uaConfig
        ua.maxCalls = cfg.max_calls
        ua.userAgent = cfg.user_agent
        med = ep_cfg.medConfig
        tuning = cfg.tuning
        if tuning.single_thread:
            ua.threadCnt = 0
            ua.mainThreadOnly = True
            med.threadCnt = 0
        med.hasIoqueue = tuning.has_ioqueue
        if tuning.clock_rate is not None:
            med.clockRate = tuning.clock_rate
            med.sndClockRate = tuning.clock_rate
        if tuning.audio_frame_ptime is not None:
            med.audioFramePtime = tuning.audio_frame_ptime
        if tuning.ptime is not None:
            med.ptime = tuning.ptime
        if tuning.no_vad is not None:
            med.noVad = tuning.no_vad
        ep.libInit(ep_cfg)
        if cfg.null_audio:
            ep.audDevManager().setNullDev()
        tcfg = pj.TransportConfig()
        tcfg.port = cfg.sip_port
        tcfg.boundAddress = cfg.host
        self.transport_id = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        if cfg.tls_ca is not None:
            self.tls_transport_id = ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tls_transport_config(cfg))
        ep.libStart()
        if tuning.pcmu_only:
            set_codecs(ep, ["PCMU/8000/1"])
        return self

    def pump(self, timeout_ms: int) -> int:
        """Run pjsua's event loop for up to ``timeout_ms`` (returns early on events)."""
        return int(self.ep.libHandleEvents(max(0, int(timeout_ms))))

    def wake(self) -> None:
        """Interrupt a pump running in another thread (see :func:`callpark.sip.wake.wake`)."""
        wake(self.config.sip_port, self.config.host)

    def shutdown(
        self,
        *,
        calls: MutableMapping[Any, Any] | None = None,
        accounts: Sequence[Any] = (),
        media: MutableMapping[Any, Any] | None = None,
        settle_s: float = 0.3,
        max_wait_s: float = 2.0,
        wait_for_responses: bool = False,
    ) -> None:
        """The clean-exit recipe; safe to call twice. Never call from a pjsua callback.

        Hang up all calls and pump: at least ``settle_s`` when calls were active, until
        every call in ``calls`` is inactive or ``max_wait_s`` passed. Then drop every Call
        (``media`` then ``calls`` are cleared: they must hold the only references),
        ``acc.shutdown()`` and ``libDestroy()``. Live Call objects at ``libDestroy`` abort
        the process. ``libDestroy`` sleeps a fixed ~1 s waiting for responses (e.g. to
        un-REGISTER) unless ``wait_for_responses`` is False (the default): requests still
        go out, their answers are not awaited.
        """
        if self.ep is None or self._destroyed:
            return
        self._destroyed = True
        ep = self.ep
        live = list((calls or {}).values())
        had_calls = any(_is_active(c) for c in live)
        try:
            ep.hangupAllCalls()
        except pj.Error as exc:
            log.debug("hangupAllCalls: %s", exc)
        start = time.monotonic()
        while True:
            self.pump(20)
            elapsed = time.monotonic() - start
            if elapsed >= max_wait_s:
                break
            if (not had_calls or elapsed >= settle_s) and not any(_is_active(c) for c in live):
                break
        del live
        if media is not None:
            media.clear()
        if calls is not None:
            calls.clear()
        gc.collect()
        for acc in accounts:
            try:
                acc.shutdown()
            except pj.Error as exc:
                log.debug("account shutdown: %s", exc)
        gc.collect()
        ep.libDestroy(0 if wait_for_responses else pj.PJSUA_DESTROY_NO_RX_MSG)
        self._log_writer = None


def tls_transport_config(cfg: EndpointConfig) -> Any:
    """A TLS 1.2+ client/listener on host (any port) that verifies the server against ``tls_ca``."""
    tcfg = pj.TransportConfig()
    tcfg.port = 0
    tcfg.boundAddress = cfg.host
    tls = tcfg.tlsConfig
    tls.CaListFile = cfg.tls_ca
    tls.method = pj.PJSIP_TLSV1_2_METHOD
    tls.verifyServer = True
    return tcfg


def _is_active(call: Any) -> bool:
    try:
        return bool(call.isActive())
    except Exception:  # noqa: BLE001 - a dead call is not active
        return False


def set_codecs(ep: Any, enabled: Iterable[str]) -> None:
    """Enable exactly ``enabled`` (codec ids such as ``PCMU/8000/1``), in that order."""
    wanted = list(enabled)
    for info in ep.codecEnum2():
        if info.codecId not in wanted:
            ep.codecSetPriority(info.codecId, 0)
    for rank, codec in enumerate(wanted):
        ep.codecSetPriority(codec, 255 - rank)


# --------------------------------------------------------------------------- accounts


@dataclass(frozen=True)
class AccountSettings:
    """A SIP identity. Without ``registrar`` it is a local account (no REGISTER).

    ``registrar`` and ``proxy`` are ``host:port``. ``domain`` (of our AOR) defaults to
    the registrar's host, else to our own host:sip_port. pjsip drops the port of
    From/To URIs anyway, so a REGISTER's To (the AOR) never carries one. ``rtp_port`` is the first
    RTP port; pjsua takes RTP/RTCP pairs from ``rtp_port`` to ``rtp_port+rtp_range``.
    """

    user: str
    sip_port: int
    rtp_port: int
    host: str = "127.0.0.1"
    rtp_range: int = 2 * PJSUA_MAX_CALLS + 4
    registrar: str | None = None
    proxy: str | None = None
    domain: str | None = None
    register_on_add: bool = False
    reg_timeout_s: int = 300
    display_name: str | None = None
    extra_reg_headers: Mapping[str, str] = field(default_factory=dict)
    auth_user: str | None = None  # digest credentials for any realm (401 and 407 challenges)
    transport: str = "udp"  # "tls": registrar and proxy are reached over SIP/TLS
    password: str | None = field(default=None, repr=False)

    @property
    def id_uri(self) -> str:
        default = self.registrar.rsplit(":", 1)[0] if self.registrar else f"{self.host}:{self.sip_port}"
        domain = self.domain or default
        uri = f"sip:{self.user}@{domain}"
        return f'"{self.display_name}" <{uri}>' if self.display_name else uri


def _transport_param(settings: AccountSettings) -> str:
    return "" if settings.transport == "udp" else f";transport={settings.transport}"


def account_config(settings: AccountSettings) -> Any:
    """Build a ``pj.AccountConfig`` for ``settings``."""
    cfg = pj.AccountConfig()
    cfg.idUri = settings.id_uri
    if settings.registrar:
        cfg.regConfig.registrarUri = f"sip:{settings.registrar}{_transport_param(settings)}"
        cfg.regConfig.registerOnAdd = settings.register_on_add
        cfg.regConfig.timeoutSec = settings.reg_timeout_s
        cfg.regConfig.retryIntervalSec = 5
        cfg.regConfig.firstRetryIntervalSec = 1
        cfg.regConfig.dropCallsOnFail = False
        for name, value in settings.extra_reg_headers.items():
            cfg.regConfig.headers.append(sip_header(name, value))
    else:
        cfg.regConfig.registerOnAdd = False
    if settings.proxy:
        cfg.sipConfig.proxies.append(f"sip:{settings.proxy}{_transport_param(settings)};lr")
    if settings.auth_user and settings.password is not None:
        # data type 0: a plain password; realm "*": answer whichever realm challenges
        cfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", settings.auth_user, 0, settings.password))
    tcfg = cfg.mediaConfig.transportConfig
    tcfg.port = settings.rtp_port
    tcfg.portRange = settings.rtp_range
    tcfg.boundAddress = settings.host
    return cfg


class Guard(Protocol):
    """Runs a callback body and reports what it raises (pjsua2 would print and swallow it)."""

    def __call__(self, where: str, fn: Callable[..., Any], /, *args: Any) -> object: ...


class GuardedAccount(pj.Account):  # type: ignore[misc]
    """A ``pj.Account`` that hands each incoming call to ``on_incoming(account, prm)`` under ``guard``."""

    def __init__(self, guard: Guard, on_incoming: Callable[[Any, Any], object]) -> None:
        super().__init__()
        self._guard = guard
        self._on_incoming = on_incoming

    def onIncomingCall(self, prm: Any) -> None:
        self._guard("onIncomingCall", self._on_incoming, self, prm)


# --------------------------------------------------------------------------- call op params


def sip_header(name: str, value: str) -> Any:
    hdr = pj.SipHeader()
    hdr.hName = name
    hdr.hValue = value
    return hdr


def op_param(
    status_code: int | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    reason: str | None = None,
    sendonly: bool = False,
) -> Any:
    """A ``pj.CallOpParam`` with a status code, extra headers and optional sendonly media.

    Headers go out exactly as given (a ``Contact`` here replaces pjsip's own on a 3xx).
    """
    prm = pj.CallOpParam(True)
    if status_code is not None:
        prm.statusCode = status_code
    if reason:
        prm.reason = reason
    for name, value in (headers or {}).items():
        prm.txOption.headers.append(sip_header(name, value))
    if sendonly:
        prm.opt.flag |= pj.PJSUA_CALL_SET_MEDIA_DIR
        prm.opt.mediaDir.append(pj.PJMEDIA_DIR_ENCODING)
    return prm
