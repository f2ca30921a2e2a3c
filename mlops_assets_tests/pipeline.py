"""Running the real asset graph in tests: materialize helpers over a real Dagster instance."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import dagster as dg

from mlops_assets.definitions import ALL_ASSETS

INGEST = [
    "raw_transactions",
    "validated_transactions",
    "quarantined_transactions",
    "transaction_features",
]
TRAIN = [
    "training_set",
    "xgboost_tuning",
    "mlp_tuning",
    "xgboost_candidate",
    "mlp_candidate",
    "challenger_model",
    "champion_model",
]
SCORE = ["scored_transactions", "drift_report"]


def materialize(
    keys: Sequence[str],
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    day: date | None = None,
    run_config: dict[str, Any] | None = None,
    raise_on_error: bool = True,
    tags: dict[str, str] | None = None,
) -> dg.ExecuteInJobResult:
    """Materialize the selected assets (one partition, if given) on ``instance``."""
    return dg.materialize(
        ALL_ASSETS,
        selection=list(keys),
        resources=resources,
        instance=instance,
        partition_key=day.isoformat() if day else None,
        run_config=run_config,
        raise_on_error=raise_on_error,
        tags=tags,
    )


def range_tags(first: date, last: date) -> dict[str, str]:
    """The tags of a run over a range of days, as a single-run backfill (the CLI's
    ``--partition-range``, the backfill daemon) gives it."""
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }


def materialize_range(
    keys: Sequence[str],
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    first: date,
    last: date,
    raise_on_error: bool = True,
) -> dg.ExecuteInJobResult:
    """Materialize the selected assets for the days ``first``..``last`` in one run."""
    return materialize(
        keys, resources, instance, raise_on_error=raise_on_error, tags=range_tags(first, last)
    )


def training_config(
    window_days: int, end: date, holdout_days: int = 1, trials: int = 2, mlp_trials: int = 1
) -> dict[str, Any]:
    """Run config of the model factory for tests: a window and a few quick trials."""
    return {
        "ops": {
            "training_set": {
                "config": {
                    "window_days": window_days,
                    "holdout_days": holdout_days,
                    "end_date": end.isoformat(),
                }
            },
            "xgboost_tuning": {"config": {"n_trials": trials}},
            "mlp_tuning": {"config": {"n_trials": mlp_trials}},
        }
    }


def metadata(result: dg.ExecuteInJobResult, key: str) -> dict[str, Any]:
    """The metadata values of the run's materialization of ``key``."""
    for event in result.get_asset_materialization_events():
        if event.asset_key.to_user_string() == key:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise KeyError(key)


def checks(result: dg.ExecuteInJobResult) -> dict[str, Any]:
    """Check name -> evaluation of the run's asset checks."""
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def failure_text(result: dg.ExecuteInJobResult) -> str:
    """Everything a failed run says about why: error messages and failure descriptions."""
    texts = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        data = event.event_specific_data
        if data.user_failure_data is not None:
            texts.append(data.user_failure_data.description or "")
        error = data.error
        while error is not None:
            texts.append(error.message)
            error = error.cause
    return "\n".join(texts)
