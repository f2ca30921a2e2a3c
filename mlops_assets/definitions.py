"""The mlops_assets code location: every asset, check and job, with the environment's resources."""

from __future__ import annotations

import dagster as dg

from mlops_assets.environment import build_resources
from mlops_assets.features.assets import transaction_features
from mlops_assets.ingest.assets import raw_transactions
from mlops_assets.monitor.assets import drift_report
from mlops_assets.score.assets import scored_transactions
from mlops_assets.settings import load_settings
from mlops_assets.train.assets import fraud_model, registered_model
from mlops_assets.validate.assets import validated_transactions

ALL_ASSETS = [
    raw_transactions,
    validated_transactions,
    transaction_features,
    fraud_model,
    registered_model,
    scored_transactions,
    drift_report,
]

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(
        raw_transactions, validated_transactions, transaction_features
    ),
    description="Land, validate and featurize one day.",
)
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets(fraud_model, registered_model),
    description="Train the fraud model on a window of feature days and register it.",
)
scoring_job = dg.define_asset_job(
    "scoring_job",
    selection=dg.AssetSelection.assets(scored_transactions, drift_report),
    description="Score one day with the champion and report its drift.",
)


def build_definitions() -> dg.Definitions:
    """Definitions for the environment the settings describe."""
    return dg.Definitions(
        assets=ALL_ASSETS,
        jobs=[ingest_job, training_job, scoring_job],
        resources=build_resources(load_settings()),
    )


defs = build_definitions()
