"""The demo: generate a week of transactions, materialize the whole graph, say where to look."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from mlops_assets.demo_report import command_path, describe, library_log, run_page
from mlops_assets.demo_report import where_to_look as where_to_look  # the CLI's summary
from mlops_assets.demo_stream import StreamLeg
from mlops_assets.logs import library_output_to
from mlops_assets.settings import Settings

#: the demo's runs log their warnings and errors (into the demo log, see
#: :func:`~mlops_assets.logs.library_output_to`); all of a run's events are on its page
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def say_now(line: str) -> None:
    """A progress line on the console, at once (stdout may be a pipe, e.g. into ``tee``)."""
    print(line, flush=True)


@dataclass(frozen=True)
class DemoPlan:
    """Which days the demo generates and how it uses them.

    Day 1 only warms up the 24-hour history features; the first model trains on the next
    ``window_days`` days (its last day held out). The days after it arrive one at a time, as in
    production: each is ingested, scored and checked for drift, the labels of the day
    ``label_delay_days`` earlier arrive and its performance is measured, and the retraining
    sensor is asked whether the champion needs replacing. The drift scenario starts at
    ``drift_start``.
    """

    start: date
    days: int
    window_days: int
    drift_start: date | None
    label_delay_days: int = 2

    @property
    def all_days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(self.days)]

    @property
    def training_end(self) -> date:
        return self.start + timedelta(days=self.window_days)


def default_plan(days: int = 11, start: date | None = None, drift_days: int = 4) -> DemoPlan:
    """``days`` days ending yesterday (UTC), the last ``drift_days`` of them drifted."""
    if days < 5:
        raise ValueError("the demo needs at least 5 days (warm-up, training, holdout, new)")
    first = start or (datetime.now(UTC).date() - timedelta(days=days))
    window_days = max(3, days - 1 - max(drift_days, 0) - 1)
    drift_start = first + timedelta(days=days - drift_days) if drift_days > 0 else None
    return DemoPlan(start=first, days=days, window_days=window_days, drift_start=drift_start)


def prepare_dagster_home(settings: Settings) -> Path:
    """Point DAGSTER_HOME at the project-local instance (unless set) and create it.

    A missing ``dagster.yaml`` is written with telemetry off; storage stays Dagster's SQLite
    default under DAGSTER_HOME.
    """
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home)))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    return home


def failure_message(result: Any) -> str:
    """Each failed step and its error: the code's own exception, not Dagster's wrapper of it."""
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.event_specific_data.error
            while error is not None and error.cause is not None:
                error = error.cause
            messages.append(
                f"{event.step_key}: {error.message.strip() if error else event.message}"
            )
    return "\n".join(messages) or "run failed"


def _materialized(result: Any) -> dict[str, dict[str, Any]]:
    return {
        event.asset_key.to_user_string(): {
            k: v.value for k, v in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }


class DemoFailed(RuntimeError):
    """A demo run failed; the message carries the failing step's error."""


def run_failed(label: str, result: Any, log: Path | None = None) -> DemoFailed:
    """The error of an unexpected failed run: its id, each failed step's error, and where the
    rest is (the run's page in the UI, the library log)."""
    where = f"the run's events and tracebacks: {command_path()} ui, then {run_page(result.run_id)}"
    return DemoFailed(
        f"{label} failed (run {result.run_id}):\n{failure_message(result)}\n"
        f"See {where}" + (f"; the libraries' output: {log}" if log else "")
    )


def run_demo(
    settings: Settings,
    plan: DemoPlan,
    rows_per_day: int = 20_000,
    bad_row_share: float = 0.01,
    seed: int = 42,
    fmt: str = "csv",
    say: Callable[[str], None] = say_now,
    xgboost_trials: int = 6,
    mlp_trials: int = 2,
    stream: bool = True,
) -> dict[str, Any]:
    """Generate the demo data and materialize every asset for it, printing progress; with
    ``stream``, the last day arrives on a local Kafka broker instead of as a file.

    The console gets the demo's progress only: what the libraries write to standard error
    goes to :func:`library_log` (named first), the runs' events stay in the instance."""
    log = library_log(settings)
    say(f"Library output (TensorFlow, MLflow, the runs' warnings) goes to {log}")
    with library_output_to(log):
        return _build_everything(
            settings,
            plan,
            rows_per_day=rows_per_day,
            bad_row_share=bad_row_share,
            seed=seed,
            fmt=fmt,
            say=say,
            xgboost_trials=xgboost_trials,
            mlp_trials=mlp_trials,
            stream=stream,
            log=log,
        )


def _build_everything(
    settings: Settings,
    plan: DemoPlan,
    *,
    rows_per_day: int,
    bad_row_share: float,
    seed: int,
    fmt: str,
    say: Callable[[str], None],
    xgboost_trials: int,
    mlp_trials: int,
    stream: bool,
    log: Path,
) -> dict[str, Any]:
    import dagster as dg

    from mlops_assets.datagen import GeneratorConfig, write_day
    from mlops_assets.datagen.labels import write_labels
    from mlops_assets.monitor.retrain_sensor import retrain_sensor

    prepare_dagster_home(settings)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    for noisy in ("mlflow", "alembic", "evidently", "httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # librdkafka's own notes (a broker still starting up) are not the demo's progress
    logging.getLogger("mlops_assets.kafka").setLevel(logging.ERROR)
    # a uv-made virtualenv has no pip; MLflow warns about it on every logged model
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)

    from mlops_assets.definitions import defs

    instance = dg.DagsterInstance.get()
    days = plan.all_days
    if days[0] < settings.partitions_start:
        raise DemoFailed(
            f"demo starts {days[0]}, before MLOPS_PARTITIONS_START={settings.partitions_start}"
        )
    config = GeneratorConfig(
        rows_per_day=rows_per_day,
        seed=seed,
        epoch=settings.paysim_epoch,
        drift_start=plan.drift_start,
        bad_row_share=bad_row_share,
    )
    say(
        f"Generating {len(days)} days x {rows_per_day:,} transactions "
        f"({days[0]}..{days[-1]}, drift from {plan.drift_start}) into "
        f"{settings.resolved_landing_uri}"
    )
    streamed_day = days[-1] if stream and days[-1] > plan.training_end else None
    outbox = settings.home_path / "outbox"  # the streamed day's file, not in the landing zone
    for day in days:
        target = str(outbox) if day == streamed_day else settings.resolved_landing_uri
        write_day(day, config, target, fmt=fmt)

    def run(job: str, label: str, **kwargs: Any) -> dict[str, dict[str, Any]]:
        started = time.perf_counter()
        result = defs.resolve_job_def(job).execute_in_process(
            instance=instance, raise_on_error=False, **kwargs
        )
        if not result.success:
            raise run_failed(label, result, log)
        assets = _materialized(result)
        say(f"  {label:<28} {time.perf_counter() - started:5.1f}s  {describe(assets)}")
        return assets

    first_run = [d for d in days if d <= plan.training_end]
    say(
        f"Ingesting, validating and featurizing the first {len(first_run)} days (Dagster home "
        f"{os.environ['DAGSTER_HOME']})"
    )
    for i, day in enumerate(first_run, 1):
        run(
            "ingest_job",
            f"[{i}/{len(days)}] {day} ingest",
            partition_key=day.isoformat(),
            run_config=QUIET_LOGS,
        )

    tuning = {
        "xgboost_tuning": {"config": {"n_trials": xgboost_trials}},
        "mlp_tuning": {"config": {"n_trials": mlp_trials}},
    }
    say(f"Training on the {plan.window_days} days up to {plan.training_end} (last day held out)")
    training_config = {
        "ops": {
            "training_set": {
                "config": {
                    "window_days": plan.window_days,
                    "holdout_days": 1,
                    "end_date": plan.training_end.isoformat(),
                }
            },
            **tuning,
        },
        **QUIET_LOGS,
    }
    trained = run("training_job", "tune, train, gate, promote", run_config=training_config)

    say("Scoring the training days with the champion and reporting their drift")
    drift: dict[str, Any] = {}
    for day in first_run:
        drift[day.isoformat()] = run(
            "scoring_job", f"{day} score", partition_key=day.isoformat(), run_config=QUIET_LOGS
        )["drift_report"]

    def labels_arrive(today: date) -> None:
        labelled = today - timedelta(days=plan.label_delay_days)
        if labelled <= days[0]:
            return
        write_labels(labelled, config, settings.resolved_labels_uri, fmt=fmt)
        run(
            "monitoring_job",
            f"  labels of {labelled} arrive",
            partition_key=labelled.isoformat(),
            run_config=QUIET_LOGS,
        )

    say(
        "The following days arrive one at a time: ingest, score, drift; labels arrive "
        f"{plan.label_delay_days} days late; the retraining sensor decides"
    )
    retrains: list[dict[str, Any]] = []
    leg = StreamLeg(settings, say) if streamed_day is not None else None
    streamed: dict[str, Any] = {}
    for i, day in enumerate(days[len(first_run) :], len(first_run) + 1):
        if day == streamed_day and leg is not None:
            say(f"  [{i}/{len(days)}] {day} arrives on Kafka instead of as a file")
            if leg.start():
                leg.send(next(outbox.glob(f"*{day.isoformat()}*")))
                leg.ingest(defs.resources)
                leg.score(defs.resources)
                leg.request_day(instance, defs.resources, day)
            else:  # no Java or broker: the day is delivered as a file after all
                for file in outbox.glob(f"*{day.isoformat()}*"):
                    file.replace(Path(settings.resolved_landing_uri) / file.name)
                leg = None
        run(
            "ingest_job",
            f"[{i}/{len(days)}] {day} ingest",
            partition_key=day.isoformat(),
            run_config=QUIET_LOGS,
        )
        drift[day.isoformat()] = run(
            "scoring_job", f"{day} score", partition_key=day.isoformat(), run_config=QUIET_LOGS
        )["drift_report"]
        if day == streamed_day and leg is not None:
            streamed = {"day": day, "line": leg.compare(defs.resources, day), **leg.summary}
            leg.stop()
        labels_arrive(day)
        decision = retrain_sensor(
            dg.build_sensor_context(instance=instance, resources=defs.resources),
            defs.resources["mlflow_tracking"],
            defs.resources["policy"],
        )
        if isinstance(decision, dg.SkipReason):
            say(f"  retraining sensor: {decision.skip_message}")
            continue
        for request in decision.run_requests:
            say(f"  retraining sensor: {request.tags['mlops/retrain_reason']}")
            retrains.append(
                retrain(defs, instance, request, {"ops": tuning, **QUIET_LOGS}, say, log)
            )
    return {
        "trained": trained,
        "drift": drift,
        "days": days,
        "retrains": retrains,
        "streamed": streamed,
    }


def gate_blocked(result: Any) -> bool:
    """Whether a model-factory run failed only because the gate blocked its challenger:
    ``challenger_model`` recorded a blocked decision, and the one failed step is that asset's,
    failed by its blocking check (which skips ``champion_model``), not by an error."""
    gate = _materialized(result).get("challenger_model")
    failures = [e for e in result.all_events if e.is_step_failure]
    return (
        gate is not None
        and gate["gate_decision"] == "blocked"
        and len(failures) == 1
        and failures[0].step_key == "challenger_model"
        and getattr(failures[0].event_specific_data.error, "cls_name", None)
        == "DagsterAssetCheckFailedError"
    )


def retrain(
    defs: Any,
    instance: Any,
    request: Any,
    run_config: dict[str, Any],
    say: Callable[[str], None],
    log: Path | None = None,
) -> dict[str, Any]:
    """Run the model factory as the sensor requested; a blocked gate is an outcome, not a
    failure of the demo: it is said as a decision, with the run's page where its check and
    reasons are."""
    started = time.perf_counter()
    result = defs.resolve_job_def("training_job").execute_in_process(
        instance=instance, run_config=run_config, tags=request.tags, raise_on_error=False
    )
    if not result.success and not gate_blocked(result):
        raise run_failed("retraining", result, log)
    assets = _materialized(result)
    say(f"  {'retrain':<28} {time.perf_counter() - started:5.1f}s  {describe(assets)}")
    if not result.success:
        gate = assets["challenger_model"]
        say(
            f"  the gate kept champion v{gate['champion_version']}: v{gate['model_version']}'s "
            f"{gate['gate_metric']} {gate['gate_challenger_value']:.3f} vs the champion's "
            f"{gate['gate_champion_value']:.3f} + margin {gate['gate_margin']:.3f}"
        )
        say(f"    the gate's reasons, in the Dagster UI: {run_page(result.run_id)}")
    return assets
