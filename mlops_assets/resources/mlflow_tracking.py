"""MLflow tracking and registry, one MLflow run per asset materialization.

Unlike dagster-mlflow's shared-run resource (which creates duplicate runs under the
multiprocess executor, see DESIGN.md), each ``start_run`` opens its own run, tags it with the
Dagster run and asset, and always ends it, so no active run leaks into the next
materialization.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg


class MlflowTracking(dg.ConfigurableResource):
    """Where MLflow runs and models live: a tracking URI, an experiment and its artifact root."""

    tracking_uri: str
    experiment_name: str
    artifact_root: str
    ui_url: str = "http://127.0.0.1:5000"

    def _configure(self) -> None:
        import mlflow

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                parents=True, exist_ok=True
            )
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)

    def client(self):
        """An MlflowClient bound to this tracking and registry URI."""
        from mlflow import MlflowClient

        self._configure()
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_id(self) -> str:
        """The experiment's id, created (with this artifact root) on first use."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        existing = client.get_experiment_by_name(self.experiment_name)
        if existing is not None:
            return existing.experiment_id
        location = self.artifact_root
        if "://" not in location:
            Path(location).mkdir(parents=True, exist_ok=True)
            location = Path(location).resolve().as_uri()
        try:
            return client.create_experiment(self.experiment_name, artifact_location=location)
        except MlflowException:  # created concurrently by another step
            return client.get_experiment_by_name(self.experiment_name).experiment_id

    @contextmanager
    def start_run(
        self, context: dg.AssetExecutionContext, run_name: str | None = None
    ) -> Iterator[object]:
        """Open a fresh MLflow run for this materialization; it is always ended afterwards."""
        import mlflow

        self._configure()
        stale = mlflow.active_run()
        if stale is not None:
            context.log.warning(f"Ending a leaked active MLflow run {stale.info.run_id}")
            mlflow.end_run()
        tags = {
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": context.asset_key.to_user_string(),
        }
        if context.has_partition_key:
            tags["dagster.partition_key"] = context.partition_key
        run = mlflow.start_run(experiment_id=self.experiment_id(), run_name=run_name, tags=tags)
        status = "FAILED"
        try:
            yield run
            status = "FINISHED"
        finally:
            mlflow.end_run(status=status)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_version_url(self, name: str, version: str) -> str:
        return f"{self.ui_url.rstrip('/')}/#/models/{name}/versions/{version}"
