"""The run-failure sensor: every failed run of this code location becomes an alert.

The alert names the job, the failed steps and the partition, carries the error message (for a
blocked promotion gate: ``promotion gate blocked: <the gate's decision>``) and links to the
run's page in the Dagster UI. It goes through the ``alerts`` resource (:class:`AlertSink`);
a webhook that is down is retried and logged, and never fails the sensor's tick.
"""

from collections.abc import Mapping

import dagster as dg

from mlops_assets.monitor.alerts import Alert
from mlops_assets.resources.alerts import AlertSink
from mlops_assets.resources.mlflow_tracking import MlflowTracking

SENSOR_NAME = "alert_on_run_failure"
MAX_LINES = 10  # error lines quoted in one alert
MAX_LINE_CHARS = 600

# partition tags Dagster sets on a run (one partition, or a range)
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def _error_message(error: object) -> str:
    """The useful line of a serialized error: the user's exception inside Dagster's wrapper,
    as ``ExceptionType: message``, without Dagster's module path."""
    while getattr(error, "cause", None) is not None and str(
        getattr(error, "cls_name", "")
    ).startswith("Dagster"):
        error = error.cause  # type: ignore[attr-defined]
    message = str(getattr(error, "message", "") or "").strip()
    cls_name = str(getattr(error, "cls_name", "") or "")
    prefix, _, rest = message.partition(":")
    if cls_name and "." in prefix and prefix.endswith(cls_name):
        message = f"{cls_name}:{rest}"
    return message


def _step_failure_text(event: dg.DagsterEvent) -> str:
    """What made one step fail: the ``Failure`` description, else the error."""
    data = event.event_specific_data
    user_failure = getattr(data, "user_failure_data", None)
    if user_failure is not None and user_failure.description:
        return str(user_failure.description)
    error = getattr(data, "error", None)
    return _error_message(error) if error is not None else (event.message or "step failed")


def failed_blocking_checks(
    instance: dg.DagsterInstance, run_id: str
) -> list[dg.AssetCheckEvaluation]:
    """The blocking asset checks that failed with ERROR severity in the run."""
    records = instance.get_records_for_run(
        run_id=run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    failed = []
    for record in records:
        event = record.event_log_entry.dagster_event
        evaluation = event.event_specific_data if event is not None else None
        if (
            isinstance(evaluation, dg.AssetCheckEvaluation)
            and not evaluation.passed
            and evaluation.blocking
            and evaluation.severity == dg.AssetCheckSeverity.ERROR
        ):
            failed.append(evaluation)
    return failed


def _partition(tags: Mapping[str, str]) -> str | None:
    """The run's partition, or its partition range ``start...end``."""
    if tags.get(PARTITION_TAG):
        return tags[PARTITION_TAG]
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if start and end:
        return str(start) if start == end else f"{start}...{end}"
    return None


def run_failure_alert(context: dg.RunFailureSensorContext, run_url: str) -> Alert:
    """The alert for a failed run: job, failed steps, partition, error text, link to the run."""
    # imported here: the registry's modules are heavy, and only a failed run needs the name
    from mlops_assets.registry.assets import GATE_CHECK

    run = context.dagster_run
    lines: list[str] = []
    gate_blocked = False
    for evaluation in failed_blocking_checks(context.instance, run.run_id):
        description = evaluation.description or "no description"
        if evaluation.check_name == GATE_CHECK:
            gate_blocked = True
            lines.append(f"promotion gate blocked: {description}")
        else:
            check = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
            lines.append(f"blocking check {check} failed: {description}")

    step_events = context.get_step_failure_events()
    failed_steps = sorted({event.step_key for event in step_events if event.step_key})
    for event in step_events:
        error = getattr(event.event_specific_data, "error", None)
        if lines and getattr(error, "cls_name", None) == "DagsterAssetCheckFailedError":
            continue  # "N blocking asset checks failed": the checks above say which and why
        lines.append(f"{event.step_key}: {_step_failure_text(event)}")

    failure = context.failure_event
    failure_data = failure.event_specific_data
    if not lines:
        run_error = getattr(failure_data, "error", None)
        lines.append(
            _error_message(run_error)
            if run_error is not None
            else (failure.message or "the run failed")
        )

    text = "\n".join(
        line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 1] + "…"
        for line in lines[:MAX_LINES]
    )
    if len(lines) > MAX_LINES:
        text += f"\n… and {len(lines) - MAX_LINES} more"

    fields = {"Job": run.job_name, "Run ID": run.run_id}
    partition = _partition(run.tags)
    if partition:
        fields["Partition"] = partition
    if failed_steps:
        fields["Failed steps"] = ", ".join(failed_steps)
    reason = getattr(failure_data, "failure_reason", None)
    if reason is not None and reason.value != "STEP_FAILURE":
        fields["Failure reason"] = str(reason.value)

    what = "promotion gate blocked" if gate_blocked else "run failed"
    return Alert(
        title=f"{run.job_name}: {what}" + (f" ({partition})" if partition else ""),
        text=text,
        severity="error",
        link=run_url,
        link_text="Open the run in Dagster",
        fields=fields,
    )


def alert_on_run_failure(
    context: dg.RunFailureSensorContext, alerts: AlertSink, mlflow_tracking: MlflowTracking
) -> None:
    """Send one alert for the failed run (link from the Dagster UI base URL of
    ``mlflow_tracking``, MLOPS_DAGSTER_UI_URL)."""
    alert = run_failure_alert(context, mlflow_tracking.dagster_run_url(context.dagster_run.run_id))
    outcome = alerts.send(alert, context.log)
    context.log.info(f"Run {context.dagster_run.run_id} failure alert: {outcome.describe()}")


def build_run_failure_alert_sensor(
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    *,
    minimum_interval_seconds: int = 30,
    monitor_all_code_locations: bool = False,
) -> dg.RunStatusSensorDefinition:
    """The ``alert_on_run_failure`` sensor over every job of this code location (launched from
    the UI, a sensor, a schedule or a backfill). Runs started in a script's own process
    (``materialize``/``execute_in_process``) belong to no code location and are seen only with
    ``monitor_all_code_locations=True``, which watches every run of the instance."""
    return dg.run_failure_sensor(
        name=SENSOR_NAME,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        monitor_all_code_locations=monitor_all_code_locations,
        description="Sends an alert (the `alerts` webhook, or the log) for every failed run of "
        "this code location: job, failed steps, partition, the error (or the blocked promotion "
        "gate's decision) and a link to the run.",
    )(alert_on_run_failure)
