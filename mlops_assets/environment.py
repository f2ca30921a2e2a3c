"""The one place that turns settings into the resources of an environment.

Assets never branch on the environment: they receive these resources. Today there is one
environment, ``local`` (embedded defaults, or any locations given through the settings); the
production set (S3, Postgres, MLflow server, Spark cluster) is added here.
"""

from __future__ import annotations

from typing import Any

from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.landing import LandingZone
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.settings import Settings


def build_resources(settings: Settings) -> dict[str, Any]:
    """Resources keyed by the names the assets ask for."""
    return {
        "landing": LandingZone(uri=settings.resolved_landing_uri),
        "lake": DeltaLake(root_uri=settings.resolved_lake_uri),
        "mlflow_tracking": MlflowTracking(
            tracking_uri=settings.resolved_mlflow_tracking_uri,
            experiment_name=settings.mlflow_experiment,
            artifact_root=settings.resolved_mlflow_artifact_uri,
            ui_url=settings.mlflow_ui_url,
        ),
        "policy": PipelinePolicy(
            paysim_epoch=settings.paysim_epoch.isoformat(),
            max_reject_share=settings.max_reject_share,
            drift_share_threshold=settings.drift_share_threshold,
            drift_max_rows=settings.drift_max_rows,
            model_name=settings.model_name,
            model_alias=settings.model_alias,
        ),
    }
