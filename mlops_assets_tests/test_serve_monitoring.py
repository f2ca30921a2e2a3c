"""End to end with the real programs: a real Prometheus scrapes the real model service
(``mlops-assets serve``, JSON logs) and the real pipeline exporter (``mlops-assets exporter`` over
the world's Dagster instance) on loopback and evaluates the project's alert rules; a real
Alertmanager routes with the project's config to the webhook receiver (Slack-compatible
channel and PagerDuty events). The service is starved of CPU (two busy processes beside it at
a lower priority, as a throttled pod is): the latency alert must reach the pager and the channel
with its labels and runbook link, then resolve once the CPU is back. A failed pipeline run
reaches the channel through the exporter and resolves when a run succeeds. Every dashboard
query runs on the live Prometheus and names metrics the live endpoints serve.

The rules run on a compressed clock (60x: ``for: 5m`` and ``[5m]`` become 5 s,
``monitoring_servers.compress_time``); their expressions and thresholds are the real ones."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import yaml

from mlops_assets.monitor.dashboards import dashboards, queries
from mlops_assets.registry.champion import find_alias
from mlops_assets_tests.helpers import free_port
from mlops_assets_tests.monitoring_servers import (
    ALERTMANAGER_CONFIG,
    RULES,
    compress_time,
    running_alertmanager,
    running_process,
    running_prometheus,
)
from mlops_assets_tests.serve_world import NAME, World
from mlops_assets_tests.test_monitoring_config import metric_names
from mlops_assets_tests.webhook import Receiver

pytestmark = pytest.mark.slow
COMMAND = str(Path(sys.executable).parent / "mlops-assets")


def _wait(condition: Callable[[], Any], seconds: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(every)
    pytest.fail(f"{what}: not within {seconds} s")


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


class Traffic:
    """Sends the day's transactions to /predict at about ``rate``/s from a thread."""

    def __init__(
        self,
        url: str,
        requests: list[dict[str, Any]],
        rate: float = 40.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.headers = headers or {}
        self.url, self.requests, self.rate = url, requests, rate
        self.statuses: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30, headers=self.headers) as client:
            i = 0
            while not self._stop.is_set():
                request = self.requests[i % len(self.requests)]
                status = client.post(f"{self.url}/predict", json=request).status_code
                self.statuses[status] = self.statuses.get(status, 0) + 1
                i += 1
                self._stop.wait(1.0 / self.rate)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def _alertmanager_config(receiver: Receiver, directory: Path) -> dict[str, Any]:
    """The project's Alertmanager config, its secret files and PagerDuty's endpoint pointed at
    the receiver, and its waits shortened to the test's clock."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "slack-webhook-url").write_text(receiver.url)
    (directory / "pagerduty-routing-key").write_text("R0UT1NGK3Y")
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    base = receiver.url.split("/services/")[0]
    for entry in config["receivers"]:
        for slack in entry.get("slack_configs", []):
            slack["api_url_file"] = str(directory / "slack-webhook-url")
        for pager in entry.get("pagerduty_configs", []):
            pager["routing_key_file"] = str(directory / "pagerduty-routing-key")
            pager["url"] = f"{base}/pagerduty/v2/enqueue"
    return config


def _channel(receiver: Receiver, alertname: str, status: str) -> list[dict[str, Any]]:
    """Slack messages of the channel about ``alertname`` with ``status`` (FIRING/RESOLVED)."""
    found = []
    with receiver.lock:
        requests = list(receiver.requests)
    for request in requests:
        if "/services/" not in request["path"]:
            continue
        for attachment in request["body"].get("attachments", []):
            title = attachment.get("title", "")
            if alertname in title and title.startswith(f"[{status}"):
                found.append(attachment)
    return found


def _pager(receiver: Receiver, alertname: str, action: str) -> list[dict[str, Any]]:
    with receiver.lock:
        requests = list(receiver.requests)
    return [
        r["body"]
        for r in requests
        if r["path"].startswith("/pagerduty")
        and r["body"].get("event_action") == action
        and alertname in r["body"].get("payload", {}).get("summary", "")
    ]


def _renice(pid: int, niceness: int) -> None:
    """Every thread of ``pid`` to ``niceness`` (Linux: a nice value is per thread). Raising it
    is always allowed; lowering it needs privileges, and without them the thread keeps its own."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(PermissionError, ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, int(task.name), niceness)


def _firing(prometheus: Any) -> set[str]:
    alerts = prometheus.get("/api/v1/alerts")["data"]["alerts"]
    return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


def _declared_names(metrics_text: str) -> set[str]:
    names = set(re.findall(r"^# TYPE (\S+) ", metrics_text, re.M))
    names |= set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", metrics_text, re.M))
    return names


PROBE = {"fail": False}


@dg.asset(name="monitoring_probe")
def monitoring_probe() -> None:
    """Fails while ``PROBE["fail"]``: a pipeline run for the exporter to report."""
    if PROBE["fail"]:
        raise RuntimeError("deliberately failing run for the alert test")


def test_alerts_reach_the_pager_and_the_channel_and_resolve(
    world: World, receiver: Receiver, tmp_path: Path
) -> None:
    serve_port, exporter_port = free_port(), free_port()
    base_env = os.environ | {
        "MLOPS_HOME": str(world.home),
        "MLOPS_MODEL_NAME": NAME,
        "MLOPS_LOG_FORMAT": "json",
        "DAGSTER_HOME": str(world.home / "dagster"),
    }
    traffic_key = "traffic-" + "k" * 32
    serve_env = base_env | {
        # the scoring client's key, by reference to an environment variable
        "MLOPS_SERVE_API_KEYS_ENV": "MLOPS_TEST_SERVE_KEYS",
        "MLOPS_TEST_SERVE_KEYS": f"traffic predict {traffic_key}",
        "MLOPS_SERVE_PORT": str(serve_port),
        "MLOPS_LAKE_URI": str(tmp_path / "lake"),  # its own prediction log
    }
    exporter_env = base_env | {"MLOPS_EXPORTER_REFRESH_SECONDS": "1"}
    service_url = f"http://127.0.0.1:{serve_port}"
    exporter_url = f"http://127.0.0.1:{exporter_port}"
    champion = int(find_alias(world.client, NAME, "champion").version)
    rules = compress_time(RULES.read_text(), 60)
    with (
        running_process([COMMAND, "serve"], tmp_path / "serve.log", stop_seconds=60,
                        env=serve_env) as service,
        running_process([COMMAND, "exporter", "--port", str(exporter_port)],
                        tmp_path / "exporter.log", env=exporter_env),
        running_alertmanager(_alertmanager_config(receiver, tmp_path / "am"),
                             tmp_path / "alertmanager") as alertmanager,
        running_prometheus(
            {"model-service": [f"127.0.0.1:{serve_port}"],
             "mlops-exporter": [f"127.0.0.1:{exporter_port}"]},
            rules, tmp_path / "prometheus", alertmanager_url=alertmanager.url,
        ) as prometheus,
    ):  # fmt: skip
        _wait(lambda: _ok(f"{service_url}/ready"), 120, "the model service ready")
        _wait(lambda: _ok(f"{exporter_url}/metrics"), 120, "the exporter serving")
        with Traffic(
            service_url, world.requests, headers={"Authorization": f"Bearer {traffic_key}"}
        ) as traffic:
            # healthy: both targets up, no alert of the service firing
            _wait(
                lambda: (
                    {
                        r["metric"]["job"]
                        for r in prometheus.get("/api/v1/query", query="up == 1")["data"]["result"]
                    }
                    == {"model-service", "mlops-exporter"}
                ),
                30,
                "both targets scraped",
            )
            time.sleep(8)  # a whole compressed window of healthy traffic
            assert not {a for a in _firing(prometheus) if a.startswith("ModelService")}

            # starve the service: the lowest priority (healthy, it ran at the normal one, so a
            # busy machine did not slow it) and two busy processes at normal priority
            _renice(service.pid, 19)
            burners = [
                subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)
            ]
            try:
                _wait(lambda: _pager(receiver, "ModelServiceHighLatency", "trigger"), 90,
                      "the latency page")  # fmt: skip
                _wait(lambda: _channel(receiver, "ModelServiceHighLatency", "FIRING"), 30,
                      "the latency message in the channel")  # fmt: skip
            finally:
                for burner in burners:
                    burner.kill()
                    burner.wait()
                _renice(service.pid, 0)  # back to normal where allowed (root); else idle CPU
            _wait(lambda: _pager(receiver, "ModelServiceHighLatency", "resolve"), 90,
                  "the latency page resolved")  # fmt: skip
            _wait(lambda: _channel(receiver, "ModelServiceHighLatency", "RESOLVED"), 30,
                  "the latency message resolved")  # fmt: skip
        assert traffic.statuses.get(200, 0) > 100
        assert set(traffic.statuses) == {200}, traffic.statuses  # slow, never failing

        (page,) = _pager(receiver, "ModelServiceHighLatency", "trigger")[:1]
        assert page["routing_key"] == "R0UT1NGK3Y"
        assert page["payload"]["severity"] == "critical"
        assert "Model service p95 latency" in page["payload"]["summary"]
        assert any("runbook.md#modelservicehighlatency" in link["href"] for link in page["links"])
        assert "job=model-service" in page["payload"]["custom_details"]["labels"]
        (message,) = _channel(receiver, "ModelServiceHighLatency", "FIRING")[:1]
        assert "(critical)" in message["title"]
        assert "Runbook: https://github.com/" in message["text"]
        assert "runbook.md#modelservicehighlatency" in message["text"]
        assert "severity=critical" in message["text"] and "family=latency" in message["text"]

        # a failed pipeline run reaches the channel through the exporter (a warning: no page)
        PROBE["fail"] = True
        failed = dg.materialize([monitoring_probe], instance=world.instance, raise_on_error=False)
        assert not failed.success
        PROBE["fail"] = False
        (message,) = _wait(lambda: _channel(receiver, "PipelineRunFailed", "FIRING"), 60,
                           "the failed run in the channel")[:1]  # fmt: skip
        assert "The latest run of __ephemeral_asset_job__ failed" in message["text"]
        assert "runbook.md#pipelinerunfailed" in message["text"]
        assert not _pager(receiver, "PipelineRunFailed", "trigger")
        assert dg.materialize([monitoring_probe], instance=world.instance).success
        _wait(lambda: _channel(receiver, "PipelineRunFailed", "RESOLVED"), 60,
              "the failed run resolved by a successful one")  # fmt: skip

        # every dashboard query runs on the live Prometheus, reading metrics the live
        # endpoints serve (the streaming ones: checked against their registries elsewhere)
        live = _declared_names(httpx.get(f"{service_url}/metrics").text)
        live |= _declared_names(httpx.get(f"{exporter_url}/metrics").text) | {"up"}
        for name, dashboard in dashboards().items():
            for expr in queries(dashboard):
                answer = prometheus.get("/api/v1/query", query=expr)
                assert answer["status"] == "success", (name, expr, answer)
                if name != "streaming.json":
                    assert metric_names(expr) <= live, (name, expr, metric_names(expr) - live)

    # the service's JSON log: one line per request with its id, the model version and latency
    lines = []
    for line in (tmp_path / "serve.log").read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    requests = [line for line in lines if line.get("endpoint") == "/predict"]
    assert len(requests) > 100
    for line in requests[:50]:
        assert re.fullmatch(r"[0-9a-f]{32}", line["request_id"])
        assert line["model_version"] == champion and line["status"] == 200
        assert line["latency_ms"] > 0 and line["level"] == "info" and line["timestamp"]
