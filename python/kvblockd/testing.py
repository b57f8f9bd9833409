"""A real kvblockd process for tests, benchmarks and examples.

    with DaemonProcess() as d:          # a fresh temp dir and socket
        with kvblockd.connect(d.socket) as c: ...

The binary is ``binary``, else $KVBLOCKD_BIN, else build/release/daemon/kvblockd
of the repository this package was installed from (the path recorded at
build time is not used: the checkout is found from the current directory
upwards). Readiness is the daemon's "listening on" log line, read from its
output through a pipe with a bounded select(): no sleeping.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Sequence


def find_kvblockd(binary: Optional[str] = None) -> str:
    """The kvblockd binary to run (see the module doc); raises FileNotFoundError naming what was tried."""
    tried = []
    for candidate in (binary, os.environ.get("KVBLOCKD_BIN")):
        if candidate:
            if os.access(candidate, os.X_OK):
                return candidate
            tried.append(candidate)
    here = Path.cwd().resolve()
    for root in (here, *here.parents):
        candidate = root / "build" / "release" / "daemon" / "kvblockd"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    tried.append("build/release/daemon/kvblockd above " + str(here))
    raise FileNotFoundError("no kvblockd binary (set KVBLOCKD_BIN); tried: " + ", ".join(tried))


def _has_listening_line(text: str) -> bool:
    at = text.find("listening on")
    while at != -1:
        if text[max(0, at - 8):at] != "already ":
            return True
        at = text.find("listening on", at + 1)
    return False


class DaemonProcess:
    """Starts kvblockd on a socket in a fresh temp dir and waits until it listens."""

    def __init__(self, binary: Optional[str] = None, args: Sequence[str] = (), *, ready_timeout: float = 20.0,
                 socket: Optional[str] = None) -> None:
        self.binary = find_kvblockd(binary)
        self.dir = tempfile.mkdtemp(prefix="kvb-py-")
        self.socket = socket or os.path.join(self.dir, "kvblockd.sock")
        self._log = bytearray()
        self._lock = threading.Lock()
        self.proc = subprocess.Popen([self.binary, "--socket", self.socket, *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + ready_timeout
        ready = False
        while not ready:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self._log += chunk
            ready = _has_listening_line(self._log.decode(errors="replace"))
        self._drainer = threading.Thread(target=self._drain, args=(fd,), daemon=True)
        self._drainer.start()
        if not ready:
            self.kill()
            raise RuntimeError(f"kvblockd did not start listening within {ready_timeout} s; its log:\n{self.log}")

    def _drain(self, fd: int) -> None:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                if len(self._log) < (4 << 20):
                    self._log += chunk

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log(self) -> str:
        with self._lock:
            return self._log.decode(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then the exit code (SIGKILL after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._cleanup()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL (a daemon dying without a word) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def _cleanup(self) -> None:
        if self.proc.stdout is not None:
            self._drainer.join(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "DaemonProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
