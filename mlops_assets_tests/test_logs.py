"""JSON logs: the processes' lines carry their extra fields, and Dagster runs' console lines
carry run, job, step, asset and partition; text stays the local default."""

import json
import logging

import dagster as dg
import pytest
from dagster import AssetExecutionContext
from pydantic import ValidationError

from mlops_assets.logs import (
    DAGSTER_JSON_HANDLER_CONFIG,
    configure_logging,
    formatter,
)
from mlops_assets.settings import Settings


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("mlops_assets.serve.requests", logging.INFO, __file__, 1,
                               message, (), None)  # fmt: skip
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_carry_the_extra_fields() -> None:
    line = formatter("json").format(
        _record("POST /predict 200", request_id="abc", model_version=3, latency_ms=4.2)
    )
    body = json.loads(line)
    assert body["event"] == "POST /predict 200" and body["level"] == "info"
    assert body["logger"] == "mlops_assets.serve.requests"
    assert (body["request_id"], body["model_version"], body["latency_ms"]) == ("abc", 3, 4.2)
    assert body["timestamp"].endswith("Z")


def test_text_lines_append_the_extra_fields() -> None:
    line = formatter("text").format(_record("reloaded", model_version=3))
    assert line.endswith("INFO mlops_assets.serve.requests: reloaded model_version=3")


def test_a_wrong_format_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format") as refused:
        Settings()
    assert "'text' or 'json'" in str(refused.value)
    monkeypatch.delenv("MLOPS_LOG_FORMAT")
    assert Settings().log_format == "text"


def test_configure_logging_renders_exceptions_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(logging.INFO, "json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("mlops_assets.test").exception("it failed")
    configure_logging(logging.INFO, "text")
    body = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert body["event"] == "it failed" and "RuntimeError: boom" in body["exception"]


daily = dg.DailyPartitionsDefinition(start_date="2026-01-01")


@dg.asset(partitions_def=daily)
def logged_day(context: AssetExecutionContext) -> None:
    context.log.info("read 42 rows")


def test_dagster_runs_log_json_with_run_asset_and_partition(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The instance setting Compose and the Helm values use: every run line as JSON."""
    with dg.instance_for_test(overrides={"python_logs": DAGSTER_JSON_HANDLER_CONFIG}) as instance:
        result = dg.materialize([logged_day], instance=instance, partition_key="2026-05-20")
    assert result.success
    out = capfd.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    (mine,) = [line for line in lines if line["event"] == "read 42 rows"]
    assert mine["run_id"] == result.run_id and mine["level"] == "info"
    assert mine["asset"] == "logged_day" and mine["partition"] == "2026-05-20"
    success = [line for line in lines if line.get("event_type") == "STEP_SUCCESS"]
    assert success and success[0]["step"] == "logged_day"
