"""Alerts against a real local HTTP receiver: payload, delivery, retries, a receiver that is down,
no webhook, and the run-failure sensor evaluated on a real Dagster instance."""

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from mlops_assets.monitor.alerts import (
    FIELDS_PER_SECTION,
    HEADER_MAX_CHARS,
    SECTION_TEXT_MAX_CHARS,
    Alert,
    post_alert,
    redact_url,
    slack_payload,
)
from mlops_assets.monitor.sensors import SENSOR_NAME, build_run_failure_alert_sensor
from mlops_assets.resources.alerts import AlertSink
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets_tests.webhook import SECRET_PATH, Receiver  # fixtures come from conftest

DAGSTER_UI = "http://dagster.example:3000"


def _alert(**overrides: Any) -> Alert:
    values: dict[str, Any] = {
        "title": "Drift on 2026-11-22",
        "text": "7 of 15 features drifted (share 0.47 > 0.30)",
        "severity": "warning",
        "link": "http://127.0.0.1:3000/runs/abc?x=1&y=2",
        "link_text": "Drift report",
        "fields": {"Day": "2026-11-22", "Share": "0.47"},
    }
    values.update(overrides)
    return Alert(**values)


# --- payload ----------------------------------------------------------------------------


def test_payload_is_slack_json_with_text_link_and_fields() -> None:
    payload = json.loads(json.dumps(slack_payload(_alert())))
    assert "Drift on 2026-11-22" in payload["text"]
    assert "<http://127.0.0.1:3000/runs/abc?x=1&y=2|Drift report>" in payload["text"]
    blocks = payload["blocks"]
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["type"] == "plain_text"
    assert "Drift on 2026-11-22" in blocks[0]["text"]["text"]
    rendered = json.dumps(blocks)
    assert "share 0.47 &gt; 0.30" in rendered  # mrkdwn control characters escaped
    assert "runs/abc?x=1&y=2|Drift report" in rendered
    field_texts = [f["text"] for b in blocks if "fields" in b for f in b["fields"]]
    assert field_texts == ["*Day*\n2026-11-22", "*Share*\n0.47"]


def test_payload_truncates_to_block_kit_limits() -> None:
    alert = _alert(
        title="T" * 500,
        text="x" * 10_000,
        fields={f"key{i}": "v" * 5000 for i in range(45)},
        link=None,
    )
    payload = slack_payload(alert)
    blocks = payload["blocks"]
    assert len(blocks[0]["text"]["text"]) <= HEADER_MAX_CHARS
    assert blocks[0]["text"]["text"].endswith("…")
    assert len(blocks[1]["text"]["text"]) <= SECTION_TEXT_MAX_CHARS
    sections = [b for b in blocks if "fields" in b]
    assert sections and all(len(b["fields"]) <= FIELDS_PER_SECTION for b in sections)
    assert all(len(f["text"]) <= 2000 for b in sections for f in b["fields"])
    assert "more fields not shown" in sections[-1]["fields"][-1]["text"]
    assert len(blocks) <= 50
    assert len(payload["text"]) <= 4000
    assert "|" not in payload["text"].split("\n")[-1]  # no link without a URL


def test_redact_url_hides_the_secret_path() -> None:
    assert (
        redact_url("https://hooks.slack.com/services/T0/B0/secret") == "https://hooks.slack.com/…"
    )
    assert redact_url("http://user:pw@127.0.0.1:8080/x?token=1") == "http://127.0.0.1:8080/…"
    assert redact_url("https://example.com") == "https://example.com"


# --- delivery ---------------------------------------------------------------------------


def test_delivers_to_the_receiver(receiver: Receiver) -> None:
    outcome = post_alert(receiver.url, _alert(), timeout_seconds=2, retries=2, backoff_seconds=0.01)
    assert outcome.delivered and outcome.attempts == 1 and outcome.status == 200
    assert outcome.error is None
    assert len(receiver.delivered) == 1
    assert receiver.requests[0]["path"] == SECRET_PATH
    assert receiver.delivered[0] == json.loads(json.dumps(slack_payload(_alert())))


def test_retries_5xx_then_succeeds(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.script = [500, 503]
    log = logging.getLogger("test_alerts.retry")
    with caplog.at_level(logging.DEBUG, logger=log.name):
        outcome = post_alert(
            receiver.url, _alert(), timeout_seconds=2, retries=3, backoff_seconds=0.01, log=log
        )
    assert outcome.delivered and outcome.attempts == 3 and outcome.status == 200
    assert len(receiver.requests) == 3 and len(receiver.delivered) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "attempt 1/4" in warnings[0] and "HTTP 500" in warnings[0]
    assert "s3cr3tT0ken" not in caplog.text
    assert "http://127.0.0.1:" in caplog.text


def test_429_respects_retry_after_capped(receiver: Receiver) -> None:
    receiver.script = [429]
    receiver.retry_after = "1"
    started = time.monotonic()
    outcome = post_alert(receiver.url, _alert(), timeout_seconds=2, retries=1, backoff_seconds=0)
    assert outcome.delivered and outcome.attempts == 2
    assert time.monotonic() - started >= 0.9  # waited the Retry-After, not the zero backoff

    receiver.script = [429]
    receiver.retry_after = "3600"
    started = time.monotonic()
    outcome = post_alert(
        receiver.url,
        _alert(),
        timeout_seconds=2,
        retries=1,
        backoff_seconds=0,
        max_retry_after_seconds=0.1,
    )
    assert outcome.delivered and outcome.attempts == 2
    assert time.monotonic() - started < 2


def test_400_is_not_retried(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.script = [400, 400, 400]
    log = logging.getLogger("test_alerts.bad_request")
    with caplog.at_level(logging.INFO, logger=log.name):
        outcome = post_alert(
            receiver.url, _alert(), timeout_seconds=2, retries=3, backoff_seconds=0.01, log=log
        )
    assert not outcome.delivered
    assert outcome.attempts == 1 and outcome.status == 400
    assert outcome.error is not None and "HTTP 400" in outcome.error
    assert len(receiver.requests) == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "not retried" in errors[0].getMessage()
    assert "Drift on 2026-11-22" in errors[0].getMessage()  # the alert itself is in the log


def test_a_slow_receiver_times_out_and_is_retried(receiver: Receiver) -> None:
    receiver.delay_seconds = 1.0
    started = time.monotonic()
    outcome = post_alert(receiver.url, _alert(), timeout_seconds=0.2, retries=1, backoff_seconds=0)
    assert not outcome.delivered and outcome.attempts == 2 and outcome.status is None
    assert outcome.error is not None and "timed out" in outcome.error.lower()
    assert time.monotonic() - started < 2


def test_a_deadline_bounds_a_slow_receiver(receiver: Receiver) -> None:
    receiver.delay_seconds = 1.5
    sink = AlertSink(
        webhook_url=receiver.url,
        timeout_seconds=0.4,
        retries=5,
        backoff_seconds=0,
        max_seconds_per_alert=1.0,
    )
    started = time.monotonic()
    outcome = sink.send(_alert(), logging.getLogger("test_alerts.deadline"))
    assert time.monotonic() - started < 1.4
    assert not outcome.delivered and outcome.attempts == 2


def test_a_receiver_that_is_down(down_url: str, caplog: pytest.LogCaptureFixture) -> None:
    sink = AlertSink(webhook_url=down_url, timeout_seconds=1, retries=3, backoff_seconds=0.02)
    log = logging.getLogger("test_alerts.down")
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger=log.name):
        outcome = sink.send(_alert(severity="error"), log)
    assert time.monotonic() - started < 5
    assert not outcome.delivered and not outcome.logged_only
    assert outcome.attempts == 4 and outcome.status is None
    assert outcome.error is not None and "refused" in outcome.error.lower()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(warnings) == 4
    assert len(errors) == 1 and "giving up after 4 attempt(s)" in errors[0]
    assert "Drift on 2026-11-22" in errors[0]
    assert "s3cr3tT0ken" not in caplog.text and "/services/" not in caplog.text


def test_no_webhook_logs_only(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test_alerts.no_webhook")
    with caplog.at_level(logging.INFO, logger=log.name):
        warned = AlertSink().send(_alert(severity="warning"), log)
        informed = AlertSink(webhook_url=None).send(_alert(severity="info", title="FYI"), log)
    assert warned.logged_only and not warned.delivered and warned.attempts == 0
    assert informed.logged_only and warned.describe() == "logged only (no webhook configured)"
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels[0][0] == logging.WARNING and "Drift on 2026-11-22" in levels[0][1]
    assert levels[1][0] == logging.INFO and "FYI" in levels[1][1]


def test_not_an_http_url_is_an_outcome_not_an_exception() -> None:
    outcome = post_alert("hooks.slack.com/services/T/B/secret", _alert(), retries=2)
    assert not outcome.delivered and outcome.attempts == 0
    assert outcome.error is not None and "secret" not in outcome.error


# --- the run-failure sensor -------------------------------------------------------------

partitions = dg.StaticPartitionsDefinition(["2026-01-05"])


@dg.asset(partitions_def=partitions)
def broken_day(context: dg.AssetExecutionContext) -> None:
    raise ValueError(f"Landing file for {context.partition_key} is empty")


@dg.asset(
    check_specs=[dg.AssetCheckSpec("beats_champion", asset="gated_model", blocking=True)],
)
def gated_model() -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    yield dg.MaterializeResult()
    yield dg.AssetCheckResult(
        check_name="beats_champion",
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        description="pr_auc 0.801 is not above the champion's 0.903 + 0.005",
    )


@dg.asset(deps=[gated_model])
def promoted_model() -> None:
    pass


nightly_job = dg.define_asset_job("nightly_job", selection=[broken_day], partitions_def=partitions)
gate_job = dg.define_asset_job("gate_job", selection=[gated_model, promoted_model])


def _sensor_resources(sink: AlertSink, tmp_path: Path) -> dict[str, Any]:
    return {
        "alerts": sink,
        "mlflow_tracking": MlflowTracking(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
            experiment_name="unused",
            artifact_root=str(tmp_path / "artifacts"),
            dagster_ui_url=DAGSTER_UI + "/",
        ),
    }


def _fail_and_evaluate(
    job_name: str, sink: AlertSink, tmp_path: Path, partition_key: str | None = None
) -> tuple[dg.ExecuteInProcessResult, Any]:
    """Start the sensor (cursor), run the failing job on a real instance, tick the sensor."""
    sensor = build_run_failure_alert_sensor()
    defs = dg.Definitions(
        assets=[broken_day, gated_model, promoted_model],
        jobs=[nightly_job, gate_job],
        sensors=[sensor],
        resources=_sensor_resources(sink, tmp_path),
    )
    with dg.instance_for_test() as instance:
        resources = _sensor_resources(sink, tmp_path)
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            first = sensor.evaluate_tick(context)
        assert first.skip_message and "Initiating" in first.skip_message

        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, partition_key=partition_key, raise_on_error=False
        )
        assert not result.success
        with dg.build_sensor_context(
            instance=instance, cursor=first.cursor, resources=resources
        ) as context:
            tick = sensor.evaluate_tick(context)
    return result, tick


def test_sensor_definition() -> None:
    sensor = build_run_failure_alert_sensor(dg.DefaultSensorStatus.STOPPED)
    assert isinstance(sensor, dg.RunStatusSensorDefinition)
    assert sensor.name == SENSOR_NAME == "alert_on_run_failure"
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.required_resource_keys == {"alerts", "mlflow_tracking"}


def test_run_failure_sensor_posts_one_alert(receiver: Receiver, tmp_path: Path) -> None:
    sink = AlertSink(webhook_url=receiver.url, timeout_seconds=2, backoff_seconds=0.01)
    result, tick = _fail_and_evaluate("nightly_job", sink, tmp_path, partition_key="2026-01-05")

    assert [r.error for r in tick.dagster_run_reactions] == [None]
    assert len(receiver.delivered) == 1
    payload = receiver.delivered[0]
    run_url = f"{DAGSTER_UI}/runs/{result.run_id}"
    assert run_url in payload["text"]
    assert "ValueError: Landing file for 2026-01-05 is empty" in payload["text"]
    rendered = json.dumps(payload["blocks"])
    assert run_url in rendered
    assert "nightly_job: run failed (2026-01-05)" in payload["blocks"][0]["text"]["text"]
    assert "*Failed steps*\\nbroken_day" in rendered
    assert "*Partition*\\n2026-01-05" in rendered
    assert f"*Run ID*\\n{result.run_id}" in rendered


def test_blocked_promotion_gate_reads_clearly(receiver: Receiver, tmp_path: Path) -> None:
    from mlops_assets.registry.assets import GATE_CHECK

    assert GATE_CHECK == "beats_champion"
    sink = AlertSink(webhook_url=receiver.url, timeout_seconds=2, backoff_seconds=0.01)
    result, tick = _fail_and_evaluate("gate_job", sink, tmp_path)

    assert [r.error for r in tick.dagster_run_reactions] == [None]
    assert len(receiver.delivered) == 1
    text = receiver.delivered[0]["text"]
    assert "gate_job: promotion gate blocked" in text
    assert "promotion gate blocked: pr_auc 0.801 is not above the champion's 0.903 + 0.005" in text
    assert "blocking asset check failed" not in text  # Dagster's generic wrapper is dropped
    assert f"{DAGSTER_UI}/runs/{result.run_id}" in text


def test_run_failure_sensor_with_receiver_down(
    down_url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    sink = AlertSink(webhook_url=down_url, timeout_seconds=1, retries=2, backoff_seconds=0.01)
    started = time.monotonic()
    _, tick = _fail_and_evaluate("nightly_job", sink, tmp_path, partition_key="2026-01-05")
    assert time.monotonic() - started < 30
    # the tick completed: one reaction to the failed run, without a sensor error
    assert [r.error for r in tick.dagster_run_reactions] == [None]
    assert tick.cursor is not None
    log = capfd.readouterr().err  # the sensor's log (the tick's log under the daemon)
    assert log.count("Connection refused; retrying") == 2
    assert "not delivered to http://127.0.0.1:" in log and "giving up after 3 attempt(s)" in log
    assert "ValueError: Landing file for 2026-01-05 is empty" in log  # the alert, logged
    assert "s3cr3tT0ken" not in log
