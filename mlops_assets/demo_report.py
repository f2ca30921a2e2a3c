"""What the demo says: a run's progress line, the closing summary, and where to look."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mlops_assets.settings import Settings

#: where ``mlops-assets ui`` serves the Dagster UI
DAGSTER_UI = "http://127.0.0.1:3000"


def library_log(settings: Settings) -> Path:
    """The file that receives the libraries' output during the demo: ``<home>/demo.log``."""
    return settings.home_path / "demo.log"


def run_page(run_id: str) -> str:
    """The run's page in the Dagster UI that ``mlops-assets ui`` opens on the demo's instance."""
    return f"{DAGSTER_UI}/runs/{run_id}"


def describe(assets: dict[str, dict[str, Any]]) -> str:
    """A run's progress line from the metadata of the assets it materialized."""
    parts = []
    if "validated_transactions" in assets:
        valid = assets["validated_transactions"]
        parts.append(f"{valid['raw_rows']:,} rows, {valid['reject_share']:.1%} quarantined")
    if "transaction_features" in assets:
        parts.append(f"features v{assets['transaction_features']['delta_version']}")
    for family in ("xgboost", "mlp"):
        if f"{family}_tuning" in assets:
            tuning = assets[f"{family}_tuning"]
            parts.append(
                f"{family}: {tuning['trials_this_run']} trials ({tuning['pruned_this_run']} pruned)"
            )
        if f"{family}_candidate" in assets:
            model = assets[f"{family}_candidate"]
            parts.append(
                f"v{model['model_version']} holdout PR-AUC {model['pr_auc']:.3f} "
                f"(baseline {model['holdout_fraud_rate']:.4f})"
            )
    if "challenger_model" in assets:
        gate = assets["challenger_model"]
        parts.append(f"gate {gate['gate_decision']} for v{gate['model_version']}")
    if "champion_model" in assets:
        parts.append(f"champion v{assets['champion_model']['model_version']}")
    if "scored_transactions" in assets:
        scored = assets["scored_transactions"]
        parts.append(f"{scored['flagged_rows']} flagged by v{scored['model_version']}")
    if "model_performance" in assets:
        performance = assets["model_performance"]
        parts.append(
            f"champion v{performance['model_version']} PR-AUC {performance['pr_auc']:.3f} "
            f"({performance['level']})"
        )
    if "drift_report" in assets:
        report = assets["drift_report"]
        parts.append(
            f"drift share {report['drift_share']:.2f}"
            + (" DRIFT" if report["dataset_drift"] else "")
        )
    return "; ".join(parts)


def command_path() -> str:
    """How to call ``mlops-assets`` from here: the venv's script, relative when possible."""
    script = Path(sys.prefix) / "bin" / "mlops-assets"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _streamed_lines(streamed: dict[str, Any]) -> list[str]:
    if not streamed:
        return []
    return [
        f"  Streamed day:     {streamed['day']}: {streamed['sent']:,} messages on Kafka -> "
        f"raw_transactions exactly once ({streamed['dead_letters']} dead letters), "
        f"{streamed['decided']:,} decided by the streaming scorer; {streamed['line']}",
        "  Streaming by hand: mlops-assets kafka-local, then stream-setup, produce, consume, "
        "score-stream (README, Streaming)",
    ]


def where_to_look(settings: Settings, outcome: dict[str, Any]) -> str:
    """The closing summary: what was built and the commands that open it."""
    promoted = [r for r in [outcome["trained"], *outcome["retrains"]] if "champion_model" in r]
    champion = promoted[-1]["champion_model"]
    family = champion["model_family"]
    model = promoted[-1][f"{family}_candidate"]
    retrains = [
        f"{r['challenger_model']['gate_decision']} (v{r['challenger_model']['model_version']})"
        for r in outcome["retrains"]
        if "challenger_model" in r
    ]
    latest_day = max(outcome["drift"])
    report = outcome["drift"][latest_day]["report"]
    drifted = [d for d, r in sorted(outcome["drift"].items()) if r["dataset_drift"]]
    command = command_path()
    return "\n".join(
        [
            "",
            "Done. What was built:",
            f"  Delta lake:       {settings.resolved_lake_uri}  (bronze/silver/gold tables)",
            f"  Champion:         {champion['model_name']} v{champion['model_version']} "
            f"({family}); holdout PR-AUC {model['pr_auc']:.3f}, ROC-AUC "
            f"{model['roc_auc']:.3f}, precision {model['precision']:.3f}, "
            f"recall {model['recall']:.3f}, recall at {model['target_precision']:.0%} precision "
            f"{model['recall_at_precision']:.3f}",
            f"  Drift flagged on: {', '.join(drifted) or 'no day'}",
            f"  Retraining:       {', '.join(retrains) or 'not needed'} (requested by the "
            "retrain_on_drift_or_decay sensor; the gate decided)",
            f"  Latest drift report ({latest_day}): {report}",
            *_streamed_lines(outcome.get("streamed") or {}),
            "",
            "Where to look:",
            f"  Dagster UI (this same instance):  {command} ui        -> {DAGSTER_UI}",
            f"  MLflow UI:                        {command} mlflow-ui -> http://127.0.0.1:5000",
            f"  Drift report in a browser:        file://{report}",
            f"  The libraries' output (TensorFlow, MLflow, the runs' warnings): "
            f"{library_log(settings)}",
        ]
    )
