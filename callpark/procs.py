"""Child processes started by callpark: spawned with their own log file, stopped by PID.

Every manager (etcd members, the SIP edge, node workers, phones in tests) starts its
children through :class:`ManagedProcess`, so that stopping is uniform: SIGTERM, a
bounded wait, then SIGKILL of the whole process group, and the log is kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a zombie still answers ``kill(pid, 0)``).

    Another user's process counts as alive; one that vanishes while we look counts as gone.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


class ProcessFailed(RuntimeError):
    """A managed process exited when it should have been running."""


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of the log file ``path`` (``(no log)`` when it cannot be read)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class StopsOnExit:
    """Mixin for process managers: leaving a ``with`` block calls :meth:`stop`."""

    def stop(self) -> object:
        """Stop what this object started (idempotent)."""
        raise NotImplementedError

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ManagedProcess(StopsOnExit):
    """One child process with a log file; stop() is idempotent and always reaps it."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stdin_pipe: bool = False,
        stdout_pipe: bool = False,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._stdin_pipe = stdin_pipe
        self._stdout_pipe = stdout_pipe
        self._pass_fds = tuple(pass_fds)
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise ProcessFailed(f"{self.name} was never started")
        return self._popen.pid

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        if self._popen is None:
            raise ProcessFailed(f"{self.name} was never started")
        return self._popen

    def start(self) -> ManagedProcess:
        """Spawn the process in its own session (so a kill reaches its children)."""
        if self._popen is not None:
            raise ProcessFailed(f"{self.name} already started (pid {self._popen.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if self._stdin_pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE if self._stdout_pipe else self._log_file,
            stderr=self._log_file,
            env=self._env,
            cwd=self._cwd,
            start_new_session=True,
            pass_fds=self._pass_fds,
        )
        log.debug("started %s pid=%d: %s", self.name, self._popen.pid, " ".join(self.argv))
        return self

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def check_running(self) -> None:
        """Raise :class:`ProcessFailed` with the log's tail if the process has exited."""
        if not self.is_running():
            raise ProcessFailed(f"{self.name} exited with status {self.returncode()}; log tail:\n{self.log_tail()}")

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the process (not its group)."""
        if self.is_running():
            os.kill(self.pid, signum)

    def kill9(self) -> None:
        """SIGKILL the process and everything in its group, and reap it."""
        if self._popen is None:
            return
        self._kill_group(signal.SIGKILL)
        self._popen.wait()

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop gracefully (SIGTERM, then SIGKILL after ``timeout``); always reaps."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._kill_group(signal.SIGCONT)  # a paused process cannot handle SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._popen.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self._popen.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if self._popen.poll() is None:
                log.warning("%s pid=%d ignored SIGTERM; killing", self.name, self._popen.pid)
        self._kill_group(signal.SIGKILL)
        code = self._popen.wait()
        for stream in (self._popen.stdin, self._popen.stdout):
            if stream is not None:
                stream.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def _kill_group(self, signum: int) -> None:
        assert self._popen is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, signum)

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> ManagedProcess:
        return self.start() if self._popen is None else self


class ReadyLineProcess:
    """A callpark service child that prints one JSON ``{"event": "ready", ...}`` line when up.

    ``start()`` waits for that line (or for the process to die, then reports its log);
    ``info`` holds the line's fields. The node and controller harnesses build on this.
    """

    def __init__(self, label: str, argv: Sequence[str], *, log_path: Path) -> None:
        self.label = label
        self.process = ManagedProcess(label, argv, log_path=log_path, stdout_pipe=True)
        self.info: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self, timeout_s: float = 30.0) -> Self:
        from callpark.waiting import wait_until

        self.process.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.process.start()
        stdout = self.process.popen.stdout
        assert stdout is not None
        threading.Thread(target=self._read, args=(stdout,), daemon=True).start()
        try:
            wait_until(
                lambda: bool(self.info) or not self.process.is_running(), timeout=timeout_s, what=f"{self.label} ready"
            )
            self.process.check_running()  # a crash at start-up reports its log, not a time-out
        except BaseException:
            self.process.stop()
            raise
        return self

    def _read(self, stdout: IO[bytes]) -> None:
        for raw in stdout:
            line = raw.decode(errors="replace").strip()
            if not line.startswith("{"):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "ready":
                self.info = event
