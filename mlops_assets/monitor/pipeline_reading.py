"""What the Dagster instance says about the pipeline, read for Prometheus: runs, freshness of
the daily assets, sensors, backfills, and the model-quality figures the monitor assets record.

Pure reading, no HTTP: :func:`read_pipeline` returns :class:`Sample` values for the metric
families of :data:`FAMILIES`; ``exporter.py`` serves them. The thresholds come from the code
location itself (:class:`Watched`: the freshness policies of the assets, the sensors' intervals,
the pipeline policy), so the alert rules compare against what the pipeline applies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg

from mlops_assets.resources.policy import PipelinePolicy

#: metric name -> (help, label names): every family the exporter serves
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "mlops_pipeline_runs": (
        "Runs created in the last 24 hours, by job and status.",
        ("dagster_job", "status"),
    ),
    "mlops_pipeline_runs_in_progress": (
        "Runs queued, starting or started, by job.",
        ("dagster_job",),
    ),
    "mlops_pipeline_latest_run_failed": (
        "1 when the job's latest finished run failed (reason: error, or gate_blocked when only "
        "the promotion gate's blocking check failed); 0 when it succeeded.",
        ("dagster_job", "reason"),
    ),
    "mlops_pipeline_latest_run_end_timestamp_seconds": (
        "End of the job's latest finished run.",
        ("dagster_job", "status"),
    ),
    "mlops_asset_last_materialization_timestamp_seconds": (
        "When the asset was last materialized (any partition).",
        ("asset",),
    ),
    "mlops_asset_latest_partition_timestamp_seconds": (
        "Start (UTC) of the latest day the asset has materialized.",
        ("asset",),
    ),
    "mlops_asset_freshness_warn_window_seconds": (
        "The asset's freshness policy: warn when not materialized for this long.",
        ("asset",),
    ),
    "mlops_asset_freshness_fail_window_seconds": (
        "The asset's freshness policy: fail when not materialized for this long.",
        ("asset",),
    ),
    "mlops_sensor_running": ("1 when the sensor is running (stored or declared).", ("sensor",)),
    "mlops_sensor_minimum_interval_seconds": ("The sensor's minimum interval.", ("sensor",)),
    "mlops_sensor_last_tick_timestamp_seconds": (
        "The sensor's last completed tick (success or skip).",
        ("sensor",),
    ),
    "mlops_sensor_last_tick_failed": ("1 when the sensor's latest tick failed.", ("sensor",)),
    "mlops_backfill_in_progress": ("1 for each backfill still requested.", ("backfill",)),
    "mlops_backfill_started_timestamp_seconds": ("When the backfill was requested.", ("backfill",)),
    "mlops_backfill_last_progress_timestamp_seconds": (
        "The backfill's latest sign of progress: its newest run's last update, else its start.",
        ("backfill",),
    ),
    "mlops_backfill_runs": ("Runs the backfill launched, by status.", ("backfill", "status")),
    "mlops_drift_share": ("Share of drifted columns, per day (last days).", ("day",)),
    "mlops_drift_share_latest": ("Share of drifted columns of the latest day.", ("day",)),
    "mlops_drift_share_warn_threshold": ("Drift share at which the drift check warns.", ()),
    "mlops_drift_share_error_threshold": ("Drift share at which the drift check errors.", ()),
    "mlops_model_pr_auc": ("The served model's PR-AUC on labelled days.", ("day", "model_version")),
    "mlops_model_pr_auc_drop_latest": (
        "Relative PR-AUC drop against the holdout, latest labelled day.",
        ("day", "model_version"),
    ),
    "mlops_model_pr_auc_warn_drop": ("Relative PR-AUC drop that warns.", ()),
    "mlops_model_pr_auc_error_drop": ("Relative PR-AUC drop that errors.", ()),
    "mlops_model_label_coverage_latest": (
        "Share of the latest labelled day's scored transactions with a label.",
        ("day",),
    ),
    "mlops_model_label_coverage_min": ("Label coverage below which quality is thin.", ()),
}

DRIFT_REPORT = dg.AssetKey("drift_report")
MODEL_PERFORMANCE = dg.AssetKey("model_performance")
RUN_LOOKBACK = timedelta(hours=24)
IN_PROGRESS = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)
FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[str, ...]
    value: float


@dataclass(frozen=True)
class Watched:
    """What the exporter watches, from the code location: the daily assets' freshness windows
    (seconds), the sensors' minimum intervals and the quality thresholds."""

    freshness: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # warn, fail
    sensors: Mapping[str, float] = field(default_factory=dict)
    policy: PipelinePolicy = field(default_factory=PipelinePolicy)
    days: int = 30


def _seconds(window: Any) -> float:
    """Seconds of a freshness window (Dagster's ``SerializableTimeDelta``)."""
    return window.to_timedelta().total_seconds()


def watched_from_definitions(defs: dg.Definitions, days: int = 30) -> Watched:
    """:class:`Watched` of a code location's definitions (its ``policy`` resource, if any)."""
    graph = defs.resolve_asset_graph()
    freshness: dict[str, tuple[float, float]] = {}
    for key in graph.get_all_asset_keys():
        policy = getattr(graph.get(key), "freshness_policy", None)
        fail = getattr(policy, "fail_window", None)
        if fail is not None:
            warn = getattr(policy, "warn_window", None) or fail
            freshness[key.to_user_string()] = (_seconds(warn), _seconds(fail))
    sensors = {s.name: float(s.minimum_interval_seconds or 30) for s in defs.sensors or []}
    policy = (defs.resources or {}).get("policy") or PipelinePolicy()
    return Watched(freshness=freshness, sensors=sensors, policy=policy, days=days)


# --- reading ------------------------------------------------------------------------------


def _runs(instance: dg.DagsterInstance, now: datetime) -> Iterable[Sample]:
    from dagster._core.storage.dagster_run import RunsFilter

    from mlops_assets.monitor.sensors import failed_blocking_checks

    counts: dict[tuple[str, str], int] = {}
    for record in instance.get_run_records(
        RunsFilter(created_after=now - RUN_LOOKBACK), limit=5000
    ):
        run = record.dagster_run
        counts[(run.job_name, run.status.value)] = (
            counts.get((run.job_name, run.status.value), 0) + 1
        )
    for (job, status), count in sorted(counts.items()):
        yield Sample("mlops_pipeline_runs", (job, status), count)
    in_progress: dict[str, int] = {}
    for record in instance.get_run_records(RunsFilter(statuses=list(IN_PROGRESS)), limit=5000):
        job = record.dagster_run.job_name
        in_progress[job] = in_progress.get(job, 0) + 1
    for job, count in sorted(in_progress.items()):
        yield Sample("mlops_pipeline_runs_in_progress", (job,), count)
    latest: dict[str, Any] = {}
    for record in instance.get_run_records(RunsFilter(statuses=list(FINISHED)), limit=1000):
        latest.setdefault(record.dagster_run.job_name, record)
    for job, record in sorted(latest.items()):
        run = record.dagster_run
        failed = run.status == dg.DagsterRunStatus.FAILURE
        reason = "error"
        if failed and failed_blocking_checks(instance, run.run_id):
            reason = "gate_blocked"
        for candidate in ("error", "gate_blocked"):
            value = 1.0 if failed and candidate == reason else 0.0
            yield Sample("mlops_pipeline_latest_run_failed", (job, candidate), value)
        end = record.end_time or record.update_timestamp.timestamp()
        yield Sample(
            "mlops_pipeline_latest_run_end_timestamp_seconds", (job, run.status.value), end
        )


def _day_start(partition: str) -> float | None:
    try:
        day = date.fromisoformat(partition)
    except ValueError:
        return None
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _assets(instance: dg.DagsterInstance, watched: Watched) -> Iterable[Sample]:
    for asset, (warn, fail) in sorted(watched.freshness.items()):
        key = dg.AssetKey.from_user_string(asset)
        yield Sample("mlops_asset_freshness_warn_window_seconds", (asset,), warn)
        yield Sample("mlops_asset_freshness_fail_window_seconds", (asset,), fail)
        event = instance.get_latest_materialization_event(key)
        if event is None:
            continue
        yield Sample(
            "mlops_asset_last_materialization_timestamp_seconds", (asset,), event.timestamp
        )
        days = [d for d in (_day_start(p) for p in instance.get_materialized_partitions(key)) if d]
        if days:
            yield Sample("mlops_asset_latest_partition_timestamp_seconds", (asset,), max(days))


def _sensors(instance: dg.DagsterInstance, watched: Watched) -> Iterable[Sample]:
    from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType, TickStatus

    states = {
        state.instigator_name: state
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    }
    for name, interval in sorted(watched.sensors.items()):
        yield Sample("mlops_sensor_minimum_interval_seconds", (name,), interval)
        state = states.get(name)
        running = state is not None and state.status in (
            InstigatorStatus.RUNNING,
            InstigatorStatus.DECLARED_IN_CODE,
            InstigatorStatus.AUTOMATICALLY_RUNNING,
        )
        yield Sample("mlops_sensor_running", (name,), 1.0 if running else 0.0)
        if state is None:
            continue
        origin, selector = state.instigator_origin_id, state.selector_id
        done = instance.get_ticks(
            origin, selector, limit=1, statuses=[TickStatus.SUCCESS, TickStatus.SKIPPED]
        )
        if done:
            yield Sample("mlops_sensor_last_tick_timestamp_seconds", (name,), done[0].timestamp)
        latest = instance.get_ticks(
            origin,
            selector,
            limit=1,
            statuses=[TickStatus.SUCCESS, TickStatus.SKIPPED, TickStatus.FAILURE],
        )
        failed = bool(latest) and latest[0].status == TickStatus.FAILURE
        yield Sample("mlops_sensor_last_tick_failed", (name,), 1.0 if failed else 0.0)


def _backfills(instance: dg.DagsterInstance) -> Iterable[Sample]:
    from dagster._core.execution.backfill import BulkActionStatus
    from dagster._core.storage.dagster_run import RunsFilter

    for backfill in instance.get_backfills(status=BulkActionStatus.REQUESTED, limit=100):
        bid = backfill.backfill_id
        yield Sample("mlops_backfill_in_progress", (bid,), 1.0)
        yield Sample(
            "mlops_backfill_started_timestamp_seconds", (bid,), backfill.backfill_timestamp
        )
        records = instance.get_run_records(RunsFilter.for_backfill(bid), limit=10000)
        progress = backfill.backfill_timestamp
        by_status: dict[str, int] = {}
        for record in records:
            progress = max(progress, record.update_timestamp.timestamp())
            status = record.dagster_run.status.value
            by_status[status] = by_status.get(status, 0) + 1
        yield Sample("mlops_backfill_last_progress_timestamp_seconds", (bid,), progress)
        for status, count in sorted(by_status.items()):
            yield Sample("mlops_backfill_runs", (bid, status), count)


def _latest_by_partition(
    instance: dg.DagsterInstance, key: dg.AssetKey, days: int
) -> dict[str, Mapping[str, Any]]:
    """The metadata of the newest materialization of each of the latest ``days`` partitions."""
    latest: dict[str, Mapping[str, Any]] = {}
    records = instance.fetch_materializations(key, limit=max(days * 4, 100)).records
    for record in records:  # newest first
        materialization = record.asset_materialization
        if materialization is None or materialization.partition is None:
            continue
        metadata = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
        latest.setdefault(materialization.partition, metadata)
    return dict(sorted(latest.items())[-days:])


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


def _quality(instance: dg.DagsterInstance, watched: Watched) -> Iterable[Sample]:
    policy = watched.policy
    yield Sample("mlops_drift_share_warn_threshold", (), policy.drift_share_threshold)
    yield Sample("mlops_drift_share_error_threshold", (), policy.drift_share_error)
    yield Sample("mlops_model_pr_auc_warn_drop", (), policy.performance_warn_drop)
    yield Sample("mlops_model_pr_auc_error_drop", (), policy.performance_error_drop)
    yield Sample("mlops_model_label_coverage_min", (), policy.min_label_coverage)
    drift = {}
    for day, metadata in _latest_by_partition(instance, DRIFT_REPORT, watched.days).items():
        by_day = metadata.get("drift_share_by_day")
        share = _number(by_day.get(day)) if isinstance(by_day, Mapping) else None
        share = share if share is not None else _number(metadata.get("drift_share"))
        if share is not None:
            drift[day] = share
            yield Sample("mlops_drift_share", (day,), share)
    if drift:
        day = max(drift)
        yield Sample("mlops_drift_share_latest", (day,), drift[day])
    performance = _latest_by_partition(instance, MODEL_PERFORMANCE, watched.days)
    for day, metadata in performance.items():
        pr_auc = _number(metadata.get("pr_auc"))
        version = str(metadata.get("model_version", ""))
        if pr_auc is not None and not math.isnan(pr_auc):
            yield Sample("mlops_model_pr_auc", (day, version), pr_auc)
    if performance:
        day = max(performance)
        metadata = performance[day]
        drop = _number(metadata.get("pr_auc_drop"))
        if drop is not None and not math.isnan(drop):
            version = str(metadata.get("model_version", ""))
            yield Sample("mlops_model_pr_auc_drop_latest", (day, version), drop)
        coverage = _number(metadata.get("label_coverage"))
        if coverage is not None:
            yield Sample("mlops_model_label_coverage_latest", (day,), coverage)


def read_pipeline(
    instance: dg.DagsterInstance, watched: Watched, now: datetime | None = None
) -> list[Sample]:
    """Every sample the instance gives now (see :data:`FAMILIES`)."""
    now = now or datetime.now(UTC)
    samples: list[Sample] = []
    for part in (
        _runs(instance, now),
        _assets(instance, watched),
        _sensors(instance, watched),
        _backfills(instance),
        _quality(instance, watched),
    ):
        samples.extend(part)
    unknown = {s.name for s in samples} - FAMILIES.keys()
    assert not unknown, f"samples of undeclared families: {sorted(unknown)}"
    return samples
