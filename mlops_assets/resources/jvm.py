"""Running a Java server beside Python on loopback: find a Java 17+, pick free ports, start the
process in its own session, wait until it serves, and stop it (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
_JAVA_VERSION = re.compile(r'version "(\d+)')


class JavaServerError(RuntimeError):
    """A Java server could not be found, fetched or started; the message says why."""


def find_java(minimum: int = 17) -> str:
    """The ``java`` of ``$JAVA_HOME`` or the ``PATH``, checked to be ``minimum`` or newer."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise JavaServerError(
            f"Java {minimum} or newer is needed and none was found (set JAVA_HOME or put java "
            f"on the PATH; on Debian: apt-get install openjdk-{minimum}-jre-headless)"
        )
    shown = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = _JAVA_VERSION.search(shown.stderr + shown.stdout)
    if match is None or int(match.group(1)) < minimum:
        raise JavaServerError(
            f"{java} is not Java {minimum} or newer: {(shown.stderr or shown.stdout).strip()!r}"
        )
    return java


def free_port(avoid: tuple[int, ...] = ()) -> int:
    """A TCP port free on loopback now (not one of ``avoid``)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port


def accepts(port: int, host: str = HOST) -> bool:
    with suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def tail(path: Path, limit: int = 3000) -> str:
    with suppress(OSError):
        return path.read_text(errors="replace")[-limit:]
    return ""


@dataclass
class JavaServer:
    """A running Java server process; ``stop`` ends it."""

    name: str
    process: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path
    startup_seconds: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL when it takes longer than ``timeout``."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def start_java_server(
    name: str,
    command: list[str],
    log_path: Path,
    ready: Callable[[], bool],
    timeout_seconds: float,
    logs: tuple[Path, ...] = (),
    env: dict[str, str] | None = None,
) -> JavaServer:
    """Start ``command`` (its output to ``log_path``) and wait until ``ready()``; a process that
    exits or is not ready in time is a ``JavaServerError`` carrying the end of its logs."""
    started = time.monotonic()
    with open(log_path, "ab") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    server = JavaServer(name, process, log_path)
    deadline = started + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise JavaServerError(
                f"{name} exited with code {process.returncode} at start:\n"
                + "".join(tail(p) for p in (*logs, log_path))
            )
        if ready():
            server.startup_seconds = time.monotonic() - started
            return server
        time.sleep(0.1)
    server.stop()
    raise JavaServerError(
        f"{name} did not start within {timeout_seconds:g}s:\n"
        + "".join(tail(p) for p in (*logs, log_path))
    )
