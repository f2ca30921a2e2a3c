"""A real Prometheus and a real Alertmanager on loopback for the end-to-end alert test.

``prometheus`` and ``prometheus-alertmanager`` are Debian's binaries (installed by
``scripts/ensure_monitoring.sh``); missing, the tests *fail* and say how to install them (a
skipped alert test would be a silent hole). Each server runs in a temporary directory of its own
with a 1 s scrape and evaluation interval, and is always stopped afterwards.

:func:`compress_time` runs the project's own rules file on a test's clock: every duration in a
``for:`` and in a range selector is divided by ``factor`` (``5m`` -> ``5s`` at 60x), so that
a 5-minute alert fires in seconds; the expressions and thresholds are otherwise unchanged.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mlops_assets_tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "monitoring" / "prometheus" / "rules" / "mlops-alerts.yaml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "monitoring" / "alertmanager" / "alertmanager.yaml"
INSTALL_HINT = (
    "install them with `scripts/ensure_monitoring.sh`"
    " (Debian: apt-get install prometheus prometheus-alertmanager)"
)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` not found on PATH: {INSTALL_HINT}")
    return path


def _scaled(duration: str, factor: float) -> str:
    seconds = sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(duration)) / factor
    return f"{max(round(seconds * 1000), 1000)}ms"


def compress_time(rules_text: str, factor: float) -> str:
    """The rules with every ``for:`` and range-selector duration divided by ``factor`` (at
    least 1 s)."""
    document = yaml.safe_load(rules_text)
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = _scaled(rule["for"], factor)
            rule["expr"] = re.sub(
                r"\[((?:\d+(?:ms|s|m|h|d))+)\]",
                lambda m: f"[{_scaled(m.group(1), factor)}]",
                rule["expr"],
            )
    return yaml.safe_dump(document, sort_keys=False)


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _wait_ready(server: Server, path: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"{server.url} exited ({server.process.returncode}):\n{server.output()}")
        try:
            if httpx.get(f"{server.url}{path}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{server.url}{path} not ready after {seconds} s:\n{server.output()}")


@contextmanager
def running_process(
    command: list[str], log: Path, stop_seconds: float = 30, **popen: Any
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` with its output in ``log``; SIGTERM afterwards, SIGKILL if it lingers."""
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, **popen)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=stop_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@contextmanager
def _running(command: list[str], url: str, ready_path: str, log: Path) -> Iterator[Server]:
    with running_process(command, log) as process:
        server = Server(url, process, log)
        _wait_ready(server, ready_path)
        yield server


@contextmanager
def running_alertmanager(config: dict[str, Any], directory: Path) -> Iterator[Server]:
    """Alertmanager with ``config`` (a parsed alertmanager.yaml), clustering off."""
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / "alertmanager.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    command = [
        binary("prometheus-alertmanager"),
        f"--config.file={config_file}",
        f"--storage.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    with _running(command, f"http://127.0.0.1:{port}", "/-/ready", directory / "log") as server:
        yield server


@contextmanager
def running_prometheus(
    targets: dict[str, list[str]],
    rules_text: str,
    directory: Path,
    alertmanager_url: str | None = None,
) -> Iterator[Server]:
    """Prometheus scraping ``targets`` (job -> host:port) every second, evaluating
    ``rules_text`` every second and sending alerts to ``alertmanager_url``."""
    directory.mkdir(parents=True, exist_ok=True)
    rules_file = directory / "rules.yaml"
    rules_file.write_text(rules_text)
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(rules_file)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": hosts}]}
            for job, hosts in targets.items()
        ],
    }
    if alertmanager_url:
        host = alertmanager_url.split("://", 1)[1]
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [host]}]}]}
    config_file = directory / "prometheus.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    command = [
        binary("prometheus"),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--rules.alert.resend-delay=1s",
    ]
    with _running(command, f"http://127.0.0.1:{port}", "/-/ready", directory / "log") as server:
        yield server
