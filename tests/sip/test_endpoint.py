"""callpark.sip.endpoint in a child process: silence, log routing, wake-up, clean exit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from callpark.netutil import free_port
from callpark.procs import ManagedProcess
from callpark.waiting import wait_until

SCRIPT = r"""
import json, logging, sys, threading, time
from callpark.sip.endpoint import EndpointConfig, SipEndpoint
from callpark.sip.wake import wake

port, pj_level = int(sys.argv[1]), int(sys.argv[2])
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="PYLOG %(name)s %(message)s")
ep = SipEndpoint(EndpointConfig(sip_port=port, pj_log_level=pj_level or None)).start()
ep.pump(10)
threading.Timer(0.2, wake, args=(port,)).start()
t0 = time.monotonic()
ep.pump(5000)
woke_after = time.monotonic() - t0
t1 = time.monotonic()
ep.shutdown()
print("RESULT " + json.dumps({"woke_after": woke_after, "shutdown_s": time.monotonic() - t1}), flush=True)
"""


def run_endpoint(tmp_path: Path, pj_level: int) -> tuple[dict[str, float], str]:
    log_path = tmp_path / f"endpoint-{pj_level}.log"
    proc = ManagedProcess(
        "endpoint", [sys.executable, "-c", SCRIPT, str(free_port(udp_too=True)), str(pj_level)], log_path=log_path
    )
    try:
        proc.start()
        wait_until(lambda: not proc.is_running(), timeout=15, what="endpoint script exit")
        assert proc.returncode() == 0, proc.log_tail()
    finally:
        proc.stop()
    text = log_path.read_text()
    result = [line for line in text.splitlines() if line.startswith("RESULT ")]
    assert result, text
    return json.loads(result[0].removeprefix("RESULT ")), text


def test_silent_by_default_wakes_and_exits_fast(tmp_path: Path) -> None:
    result, text = run_endpoint(tmp_path, 0)
    lines = [line for line in text.splitlines() if not line.startswith("RESULT ")]
    assert lines == [], f"pjsua printed something:\n{text}"
    assert result["woke_after"] < 1.0  # the 5 s pump returned at the wake-up
    assert result["shutdown_s"] < 0.5  # libDestroy without its fixed 1 s wait


def test_pj_logs_routed_to_python_logging(tmp_path: Path) -> None:
    _, text = run_endpoint(tmp_path, 4)
    routed = [line for line in text.splitlines() if line.startswith("PYLOG callpark.pjsip")]
    assert routed, text
    unrouted = [line for line in text.splitlines() if not line.startswith(("PYLOG", "RESULT"))]
    assert unrouted == [], "\n".join(unrouted[:10])
