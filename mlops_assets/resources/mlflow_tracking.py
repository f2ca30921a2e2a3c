"""MLflow tracking and registry, one MLflow run per asset materialization.

Unlike dagster-mlflow's shared-run resource (which creates duplicate runs under the
multiprocess executor, see DESIGN.md), each ``start_run`` opens its own run, tags it with the
Dagster run (id and UI link), job, asset and partition, and always ends it (FINISHED, FAILED
when an exception escapes, KILLED when the step is interrupted), together with any run the
body left open, so no active run leaks into the next materialization. An inherited
``MLFLOW_RUN_ID`` (how dagster-mlflow shares a run between steps) is ignored.

Optuna trials are nested runs of the materialization run (``start_trial_run``), also from
Optuna's worker threads (``n_jobs > 1``).

The tracking URI is a setting: the embedded SQLite store by default, an MLflow server
(``http(s)://``) in production. Several processes opening a brand-new SQLite store at once
(one process per step under the multiprocess executor) race in MLflow's schema creation and
migration ("table ... already exists", "duplicate column name", alembic "expected to match one
row"): MLflow 3.17's tracking and registry stores create the schema without a lock. The first
use of a SQLite store in a process, and creating the experiment, therefore run under an OS
file lock next to the database file (``<db>.lock``). A server serialises that itself; there
only a concurrent experiment creation is retried.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import dagster as dg
from pydantic import Field

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import optuna
    from mlflow import ActiveRun, MlflowClient

_EXPERIMENT_ATTEMPTS = 5

# Per process: tracking URIs whose store is known to be initialised, and the materialization
# runs open right now (run id -> experiment id), for trials started in worker threads (MLflow's
# active run is thread-local).
_prepared_stores: set[str] = set()
_prepared_lock = threading.Lock()
_open_runs: dict[str, str] = {}
_open_runs_lock = threading.Lock()


def sqlite_database(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:`` tracking URI; None for other or in-memory stores."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(tracking_uri).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


@contextmanager
def _file_lock(database: Path | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<database>.lock`` (a no-op without a database file).

    ``flock`` locks belong to the open file, so this also serialises threads of one process.
    """
    if database is None or fcntl is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _is_pruned(error: BaseException) -> bool:
    """Whether ``error`` is Optuna's ``TrialPruned`` (without importing Optuna otherwise)."""
    if "optuna" not in sys.modules:
        return False
    from optuna.exceptions import TrialPruned

    return isinstance(error, TrialPruned)


def _unwind(
    run_id: str, status: str, log: logging.Logger, keep: str | None = None
) -> list[Exception]:
    """End the calling thread's active runs from the top down to ``run_id`` (ended with
    ``status``; runs the body left open above it end KILLED), stopping at ``keep``.

    Every run is popped from MLflow's stack even if telling the store fails; the errors are
    returned so the caller decides whether they may mask another exception.
    """
    import mlflow

    errors: list[Exception] = []
    while (active := mlflow.active_run()) is not None and active.info.run_id != keep:
        active_id = active.info.run_id
        mine = active_id == run_id
        if not mine:
            log.warning(f"Ending MLflow run {active_id}, left open inside run {run_id}, as KILLED")
        try:
            mlflow.end_run(status=status if mine else "KILLED")
        except Exception as error:  # end_run pops the stack before it calls the store
            errors.append(error)
        if mine:
            break
    return errors


class MlflowTracking(dg.ConfigurableResource):
    """Where MLflow runs and models live: a tracking URI, an experiment and its artifact root.

    ``tracking_uri`` is ``sqlite:///<file>`` (embedded) or ``http(s)://`` (an MLflow server,
    also used as the registry). ``artifact_root`` is where a *new* experiment keeps its
    artifacts: a local directory or a URI (``s3://``, ``mlflow-artifacts:/``...). With a
    server, a plain local directory is not used (other pods could not read it): the server
    picks the location (proxied ``mlflow-artifacts:/`` with ``--serve-artifacts``).
    """

    tracking_uri: str = Field(description="MLflow tracking and registry URI (sqlite or http).")
    experiment_name: str = Field(description="MLflow experiment of every run.")
    artifact_root: str = Field(description="Artifact location for a new experiment.")
    ui_url: str = Field(
        default="http://127.0.0.1:5000", description="Base URL of the MLflow UI, for links."
    )
    dagster_ui_url: str = Field(
        default="http://127.0.0.1:3000",
        description="Base URL of the Dagster UI, for the dagster.run_url tag on MLflow runs.",
    )

    # --- the store -----------------------------------------------------------------------

    @property
    def uses_server(self) -> bool:
        """Whether the tracking URI is an MLflow server rather than an embedded store."""
        return self.tracking_uri.startswith(("http://", "https://"))

    def _configure(self) -> None:
        import mlflow

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self._prepare_store()
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)

    def _prepare_store(self) -> None:
        """Create (or migrate) a SQLite store's schema once per process, under the file lock."""
        if self.tracking_uri in _prepared_stores:
            return
        database = sqlite_database(self.tracking_uri)
        if database is not None:
            from mlflow import MlflowClient

            with _prepared_lock, _file_lock(database):
                if self.tracking_uri not in _prepared_stores:
                    client = MlflowClient(self.tracking_uri, self.tracking_uri)
                    client.search_experiments(max_results=1)  # builds the tracking store
                    client.search_registered_models(max_results=1)  # and the registry store
        _prepared_stores.add(self.tracking_uri)

    def client(self) -> MlflowClient:
        """An MlflowClient bound to this tracking and registry URI."""
        from mlflow import MlflowClient

        self._configure()
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def _artifact_location(self) -> str | None:
        """The artifact location to create the experiment with (None: the server decides)."""
        location = self.artifact_root
        if len(urlparse(location).scheme) > 1:  # a URI (not a Windows drive letter)
            return location
        if self.uses_server:
            return None
        Path(location).mkdir(parents=True, exist_ok=True)
        return Path(location).resolve().as_uri()

    def experiment_id(self) -> str:
        """The experiment's id, created (with this artifact root) on first use."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        existing = client.get_experiment_by_name(self.experiment_name)
        if existing is None:
            # SQLite: one creator at a time; a server: retry when another client won the race
            with _file_lock(sqlite_database(self.tracking_uri)):
                for attempt in range(_EXPERIMENT_ATTEMPTS):
                    existing = client.get_experiment_by_name(self.experiment_name)
                    if existing is not None:
                        break
                    try:
                        return client.create_experiment(
                            self.experiment_name, artifact_location=self._artifact_location()
                        )
                    except MlflowException:
                        if attempt == _EXPERIMENT_ATTEMPTS - 1:
                            raise
                        time.sleep(0.2 * 2**attempt)
        if existing is None:  # pragma: no cover - every attempt either found, made or raised
            raise RuntimeError(f"Could not create MLflow experiment {self.experiment_name!r}")
        if existing.lifecycle_stage == "deleted":
            raise RuntimeError(
                f"MLflow experiment {self.experiment_name!r} (id {existing.experiment_id}) in "
                f"{self.tracking_uri} is deleted: restore it (`mlflow experiments restore "
                f"--experiment-id {existing.experiment_id}`) or choose another experiment name"
            )
        return existing.experiment_id

    # --- runs ----------------------------------------------------------------------------

    def dagster_run_url(self, run_id: str) -> str:
        """The Dagster UI page of a Dagster run."""
        return f"{self.dagster_ui_url.rstrip('/')}/runs/{run_id}"

    def dagster_tags(self, context: dg.AssetExecutionContext) -> dict[str, str]:
        """Tags linking an MLflow run back to the Dagster run, job, asset and partition."""
        run_id = context.run.run_id
        tags = {
            "dagster.run_id": run_id,
            "dagster.run_url": self.dagster_run_url(run_id),
            "dagster.job_name": context.job_name,
            "dagster.asset_key": ",".join(
                sorted(key.to_user_string() for key in context.selected_asset_keys)
            ),
        }
        if context.has_partition_key:
            tags["dagster.partition_key"] = str(context.partition_key)
        elif context.has_partition_key_range:
            key_range = context.partition_key_range
            tags["dagster.partition_key_range"] = f"{key_range.start}..{key_range.end}"
        return tags

    def _discard_outside_runs(self, log: logging.Logger) -> None:
        """Never resume or nest under a run this materialization did not open."""
        import mlflow

        inherited = os.environ.pop("MLFLOW_RUN_ID", None)
        if inherited:
            log.warning(
                f"Ignoring MLFLOW_RUN_ID={inherited}: each materialization opens its own run"
            )
        while (stale := mlflow.active_run()) is not None:
            log.warning(f"Ending a leaked active MLflow run {stale.info.run_id} as KILLED")
            mlflow.end_run(status="KILLED")

    @contextmanager
    def start_run(
        self, context: dg.AssetExecutionContext, run_name: str | None = None
    ) -> Iterator[ActiveRun]:
        """Open a fresh MLflow run for this materialization; it is always ended afterwards.

        The run ends FINISHED when the block completes, FAILED when an exception escapes it
        and KILLED when the step is interrupted (e.g. terminated from the UI); runs the block
        left open are ended KILLED. Afterwards ``mlflow.active_run()`` is None. The experiment
        is also made MLflow's active experiment, for fluent calls in the block.
        """
        import mlflow

        self._configure()
        self._discard_outside_runs(context.log)
        experiment_id = self.experiment_id()
        # the body's own fluent calls (a nested start_run, log_model...) use this experiment
        mlflow.set_experiment(experiment_id=experiment_id)
        run = mlflow.start_run(
            experiment_id=experiment_id, run_name=run_name, tags=self.dagster_tags(context)
        )
        run_id = run.info.run_id
        with _open_runs_lock:
            _open_runs[run_id] = run.info.experiment_id
        try:
            yield run
        except BaseException as error:
            with _open_runs_lock:
                _open_runs.pop(run_id, None)
            status = "FAILED" if isinstance(error, Exception) else "KILLED"
            for end_error in _unwind(run_id, status, context.log):
                context.log.warning(f"Could not end MLflow run {run_id}: {end_error!r}")
            raise
        with _open_runs_lock:
            _open_runs.pop(run_id, None)
        errors = _unwind(run_id, "FINISHED", context.log)
        if errors:
            raise errors[0]

    def _trial_parent(self, parent_run_id: str | None) -> tuple[str, str]:
        """The (run id, experiment id) a trial run nests under."""
        import mlflow

        if parent_run_id is not None:
            with _open_runs_lock:
                experiment_id = _open_runs.get(parent_run_id)
            if experiment_id is None:
                experiment_id = self.client().get_run(parent_run_id).info.experiment_id
            return parent_run_id, experiment_id
        active = mlflow.active_run()
        if active is not None:
            return active.info.run_id, active.info.experiment_id
        with _open_runs_lock:
            open_runs = list(_open_runs.items())
        if len(open_runs) == 1:  # a worker thread (e.g. Optuna n_jobs > 1) of that run
            return open_runs[0]
        if not open_runs:
            raise RuntimeError(
                "start_trial_run must be used inside start_run (the materialization's run), "
                "or be given parent_run_id"
            )
        raise RuntimeError(
            f"{len(open_runs)} materialization runs are open in this process; pass "
            "parent_run_id to start_trial_run"
        )

    @contextmanager
    def start_trial_run(
        self,
        run_name: str | None = None,
        *,
        trial: optuna.trial.BaseTrial | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> Iterator[ActiveRun]:
        """A nested MLflow run (e.g. one Optuna trial) under the open materialization run.

        The parent is ``parent_run_id``, else this thread's active run, else the one
        materialization run open in this process (so trials in Optuna's worker threads nest
        too). The child gets ``mlflow.parentRunId``, ``params`` and ``tags``; with a ``trial``
        also the default name ``trial-<number>``, the tags ``optuna.study_name`` and
        ``optuna.trial_number``, and at the end the trial's sampled parameters.

        It is always ended, with the tag ``optuna.state``:

        - the block completes: FINISHED, ``optuna.state=COMPLETE``;
        - Optuna's ``TrialPruned`` escapes: KILLED, ``optuna.state=PRUNED``. A pruned trial was
          stopped early on purpose: it is not a failure, but not a finished evaluation either,
          so ``attributes.status = 'FINISHED'`` selects exactly the completed trials;
        - another exception: FAILED (KILLED if interrupted), ``optuna.state=FAIL``.

        The exception is re-raised, so Optuna records the trial state itself.
        """
        import mlflow
        from mlflow.entities import Param, RunTag

        self._configure()
        parent_id, experiment_id = self._trial_parent(parent_run_id)
        run_tags = dict(tags or {})
        if trial is not None:
            run_tags["optuna.trial_number"] = str(trial.number)
            study = getattr(trial, "study", None)  # a FrozenTrial has none
            if study is not None:
                run_tags["optuna.study_name"] = study.study_name
            run_name = run_name or f"trial-{trial.number}"
        run = mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name or "trial",
            nested=True,
            parent_run_id=parent_id,
            tags=run_tags,
        )
        child_id = run.info.run_id
        log = dg.get_dagster_logger()

        def finish(state: str, status: str) -> list[Exception]:
            errors: list[Exception] = []
            try:
                sampled = dict(trial.params) if trial is not None else {}
                self.client().log_batch(
                    child_id,
                    params=[
                        Param(key, str(value))
                        for key, value in sampled.items()
                        if key not in (params or {})
                    ],
                    tags=[RunTag("optuna.state", state)],
                )
            except Exception as error:
                errors.append(error)
            return errors + _unwind(child_id, status, log, keep=parent_id)

        try:
            if params:
                mlflow.log_params(dict(params))
            yield run
        except BaseException as error:
            if _is_pruned(error):
                state, status = "PRUNED", "KILLED"
            else:
                state, status = "FAIL", "FAILED" if isinstance(error, Exception) else "KILLED"
            for end_error in finish(state, status):
                log.warning(f"Could not end MLflow trial run {child_id}: {end_error!r}")
            raise
        errors = finish("COMPLETE", "FINISHED")
        if errors:
            raise errors[0]

    # --- links ---------------------------------------------------------------------------

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """The MLflow UI page of a run."""
        return f"{self.ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_version_url(self, name: str, version: str) -> str:
        """The MLflow UI page of a registered model version."""
        return f"{self.ui_url.rstrip('/')}/#/models/{name}/versions/{version}"
