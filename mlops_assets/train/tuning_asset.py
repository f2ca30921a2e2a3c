"""``<family>_tuning``: the family's Optuna study, worked by one or several steps at once.

A graph-backed asset of three ops, so that the trials of one materialization can run in several
processes (one pod each, with its GPU, under Kubernetes) against the shared study storage:

* ``<family>_study`` (light, no GPU): opens or creates the study, opens the materialization's
  MLflow run (left open for the trials) and splits ``n_trials`` into ``workers`` shares, one
  dynamic output each;
* ``<family>_trials`` (one step per share, with the GPU request of a training step): loads the
  training set and runs its share of the study's trials, each a nested MLflow run of that run
  and tagged in Optuna with the session (the MLflow run id), its worker, host and process;
* ``<family>_best`` (light): once every share is done, reads the study (the best trial so far,
  its history and importances, this materialization's trials), logs the result to the MLflow
  run, ends it, and records the asset's materialization and its metadata.

The values between the ops are small JSON and go through the Dagster instance
(``EventLogIOManager``), so the steps need no shared disk. Run config keeps the shape of a
single-op asset: ``ops: {<family>_tuning: {config: {n_trials, timeout_seconds, seed, workers}}}``.

A worker that dies mid-trial leaves that trial RUNNING; with Postgres the storage's heartbeat
marks it failed after the grace period (``tuning.storage_for``). Re-executing the run from
failure keeps the plan (same session and MLflow run): a worker counts the trials it finished
before and runs only the rest of its share.

No ``from __future__ import annotations``: Dagster reads the ops' annotations (config,
resources) at definition time.
"""

import os
import socket
import time
import warnings
from typing import Any

import dagster as dg
from pydantic import Field

from mlops_assets.features.definition import LABEL_COLUMN
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.optuna_storage import OptunaStorage
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.resources.step_values import EventLogIOManager
from mlops_assets.train.families import ModelFamily
from mlops_assets.train.k8s import gpu_training_op_tags
from mlops_assets.train.pinned import pinned_spec, pinned_training_set, require_both_classes

#: the IO manager of the values between the tuning ops (one definition for every family)
VALUES_IO_MANAGER = "tuning_values_io_manager"
_VALUES_IO_MANAGER_DEF = EventLogIOManager().get_resource_definition()
#: Optuna user attributes of every trial
SESSION_ATTR = "tuning_session"
WORKER_ATTR = "worker"


class TuningConfig(dg.Config):
    """How much tuning to do in this materialization (the study continues from earlier runs)."""

    n_trials: int = Field(8, ge=1, description="Trials to run in this materialization.")
    timeout_seconds: float = Field(
        900.0,
        gt=0,
        description="Time budget of each tuning step: it starts no new trial after this many "
        "seconds.",
    )
    seed: int = Field(0, description="Sampler seed (offset by the trials already in the study).")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Tuning steps that share this materialization's trials, each in its own "
        "process (under Kubernetes its own pod and GPU) on the same study; n_trials is split "
        "between them (at most one step per trial).",
    )


def build_tuning_asset(family: ModelFamily) -> dg.AssetsDefinition:
    """``<family>_tuning``: continue the family's Optuna study; its best parameters."""
    name = family.name

    @dg.op(
        name=f"{name}_study",
        ins={"training_set": dg.In(dg.Nothing)},
        out=dg.DynamicOut(dict, io_manager_key=VALUES_IO_MANAGER),
        description=f"Open the {name} study and the MLflow run; one share of trials per worker.",
    )
    def plan(
        context: dg.OpExecutionContext,
        config: TuningConfig,
        mlflow_tracking: MlflowTracking,
        optuna_storage: OptunaStorage,
        policy: PipelinePolicy,
    ):
        from mlops_assets.train.tuning import split_trials

        spec = pinned_spec(context)
        study = optuna_storage.open_study(
            f"{policy.model_name}-{name}", seed=config.seed, warmup_steps=family.warmup_steps
        )
        shares = split_trials(config.n_trials, config.workers)
        client = mlflow_tracking.client()
        experiment_id = mlflow_tracking.experiment_id()
        run = client.create_run(
            experiment_id,
            run_name=f"{name}_tuning",
            tags={
                **mlflow_tracking.dagster_tags(context),
                "optuna.study": study.study_name,
                "optuna.storage": optuna_storage.display_url,
                "model_family": name,
                "lineage.partition_range": spec.partition_range,
                "tuning.workers": str(len(shares)),
            },
        )
        run_id = run.info.run_id
        # every worker draws from its own seed: trials so far + the worker's index
        base_seed = config.seed + len(study.get_trials(deepcopy=False))
        context.log.info(
            f"{study.study_name}: {config.n_trials} trial(s) in {len(shares)} step(s) "
            f"{shares}; MLflow run {run_id}"
        )
        for worker, trials in enumerate(shares):
            yield dg.DynamicOutput(
                {
                    "worker": worker,
                    "trials": trials,
                    "workers": len(shares),
                    "sampler_seed": base_seed + worker,
                    "timeout_seconds": config.timeout_seconds,
                    "study": study.study_name,
                    "mlflow_run_id": run_id,
                    "experiment_id": experiment_id,
                    "partition_range": spec.partition_range,
                },
                mapping_key=f"worker_{worker}",
            )

    @dg.op(
        name=f"{name}_trials",
        ins={"work": dg.In(dict)},
        out=dg.Out(dict, io_manager_key=VALUES_IO_MANAGER),
        tags=gpu_training_op_tags(),
        description=f"Run one share of the {name} study's trials (a training step: GPU).",
    )
    def trials(
        context: dg.OpExecutionContext,
        work: dict[str, Any],
        lake: DeltaLake,
        mlflow_tracking: MlflowTracking,
        optuna_storage: OptunaStorage,
    ) -> dict[str, Any]:
        session, worker = work["mlflow_run_id"], work["worker"]
        try:
            return _run_share(context, family, work, lake, mlflow_tracking, optuna_storage)
        except BaseException:
            # the materialization's MLflow run failed with it (the best step will not run)
            try:
                mlflow_tracking.client().set_terminated(session, "FAILED")
            except Exception as error:  # the original error matters more
                context.log.warning(f"Could not end MLflow run {session}: {error!r}")
            context.log.error(f"{work['study']}: worker {worker} failed")
            raise

    @dg.op(
        name=f"{name}_best",
        ins={"reports": dg.In(list)},
        out=dg.Out(dg.Nothing),
        description=f"The {name} study's best trial once every worker is done; the metadata.",
    )
    def best(
        context: dg.OpExecutionContext,
        reports: list[dict[str, Any]],
        mlflow_tracking: MlflowTracking,
        optuna_storage: OptunaStorage,
    ):
        yield _best(context, family, reports, mlflow_tracking, optuna_storage)

    @dg.config_mapping
    def tuning_config(config: TuningConfig) -> dict[str, Any]:
        return {f"{name}_study": {"config": config.model_dump()}}

    with warnings.catch_warnings():  # resource_defs of a graph asset are "beta" in Dagster 1.13
        warnings.simplefilter("ignore", dg.BetaWarning)

        @dg.graph_asset(
            name=f"{name}_tuning",
            ins={"training_set": dg.AssetIn("training_set", dagster_type=dg.Nothing)},
            config=tuning_config,
            group_name="train",
            kinds=set(family.kinds),
            resource_defs={VALUES_IO_MANAGER: _VALUES_IO_MANAGER_DEF},
            description=f"The best {name} hyper-parameters so far: an Optuna study (persistent, "
            "resumed by every materialization) maximising PR-AUC on the training set's tuning "
            "day; unpromising trials are pruned; each trial is a nested MLflow run under this "
            "materialization's run. Trials, time budget and the number of parallel tuning steps "
            "(`workers`, each with its GPU) are launchpad config.",
        )
        def tuning_asset(training_set):
            return best(plan(training_set).map(trials).collect())

    return tuning_asset


def _objective(family: ModelFamily, data, work: dict[str, Any], dagster_run_id: str):
    """The trial's objective: fit on the fit days, PR-AUC on the tuning day; who ran it."""
    import mlflow
    from sklearn.metrics import average_precision_score

    train, tuning = data.train, data.tuning
    attributes = {
        SESSION_ATTR: work["mlflow_run_id"],
        WORKER_ATTR: work["worker"],
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "dagster_run_id": dagster_run_id,
        "partition_range": data.spec.partition_range,
    }

    def objective(trial) -> float:
        for key, value in attributes.items():
            trial.set_user_attr(key, value)
        model = family.fit(train, family.suggest(trial), validation=tuning, trial=trial)
        value = float(average_precision_score(tuning[LABEL_COLUMN], family.scores(model, tuning)))
        mlflow.log_metric("tuning_pr_auc", value)
        return value

    return objective


def _finished_by(study, session: str, worker: int) -> list[int]:
    """Trials of this session this worker finished (completed or pruned) in earlier attempts."""
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [
        t.number
        for t in study.get_trials(deepcopy=False, states=done)
        if t.user_attrs.get(SESSION_ATTR) == session and t.user_attrs.get(WORKER_ATTR) == worker
    ]


def _run_share(
    context: dg.OpExecutionContext,
    family: ModelFamily,
    work: dict[str, Any],
    lake: DeltaLake,
    mlflow_tracking: MlflowTracking,
    optuna_storage: OptunaStorage,
) -> dict[str, Any]:
    from mlops_assets.train.tuning import run_trials

    started = time.perf_counter()
    session, worker = work["mlflow_run_id"], work["worker"]
    if inherited := os.environ.pop("MLFLOW_RUN_ID", None):  # MLflow would resume it
        context.log.warning(f"Ignoring MLFLOW_RUN_ID={inherited}: trials nest under {session}")
    data = pinned_training_set(context, lake)
    require_both_classes(data.tuning[LABEL_COLUMN].to_numpy(), "tuning day")
    study = optuna_storage.open_study(
        work["study"], warmup_steps=family.warmup_steps, sampler_seed=work["sampler_seed"]
    )
    earlier = _finished_by(study, session, worker)
    remaining = work["trials"] - len(earlier)
    if earlier:
        context.log.info(f"Worker {worker}: {len(earlier)} trial(s) finished before: {earlier}")
    ran: list[int] = []
    if remaining > 0:
        ran = run_trials(
            study,
            _objective(family, data, work, context.run.run_id),
            remaining,
            work["timeout_seconds"],
            record_trial=lambda trial: mlflow_tracking.start_trial_run(
                trial=trial, parent_run_id=session
            ),
            log=context.log.info,
        )
    return {
        **work,
        "ran": sorted(earlier + ran),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "device": family.device(),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _best(
    context: dg.OpExecutionContext,
    family: ModelFamily,
    reports: list[dict[str, Any]],
    mlflow_tracking: MlflowTracking,
    optuna_storage: OptunaStorage,
) -> dg.Output:
    from mlflow.entities import Metric, Param, RunTag

    from mlops_assets.train.metrics import close_figure
    from mlops_assets.train.tuning import history_figures, summarise

    reports = sorted(reports, key=lambda r: r["worker"])
    first = reports[0]
    session, experiment_id = first["mlflow_run_id"], first["experiment_id"]
    study = optuna_storage.open_study(first["study"], warmup_steps=family.warmup_steps)
    this_run = {
        t.number
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get(SESSION_ATTR) == session
    }
    reported = [n for r in reports for n in r["ran"]]
    if len(reported) != len(set(reported)) or not set(reported) <= this_run:
        raise dg.Failure(  # pragma: no cover - the storage numbers every trial once
            description=f"Workers reported trials {reported}; the study holds {sorted(this_run)}"
        )
    client = mlflow_tracking.client()
    try:
        outcome = summarise(study, this_run)
        devices = sorted({r["device"] for r in reports})
        now = int(time.time() * 1000)
        client.log_batch(
            session,
            metrics=[
                Metric("best_tuning_pr_auc", outcome.best_value, now, 0),
                Metric("trials_total", outcome.trials_total, now, 0),
            ],
            params=[Param(f"best.{k}", str(v)) for k, v in outcome.best_params.items()],
            tags=[RunTag("lineage.device", ",".join(devices))],
        )
        for file_name, figure in history_figures(study, bool(outcome.importances)):
            client.log_figure(session, figure, f"tuning/{file_name}")
            close_figure(figure)
    except BaseException:
        client.set_terminated(session, "FAILED")
        raise
    client.set_terminated(session, "FINISHED")
    context.log.info(
        f"{study.study_name}: best trial {outcome.best_trial} ({outcome.best_value:.4f}); "
        f"{len(this_run)} trial(s) this run by {len(reports)} worker(s)"
    )
    return dg.Output(
        None,
        metadata={
            "best_params": dg.MetadataValue.json(outcome.best_params),
            "best_tuning_pr_auc": outcome.best_value,
            "best_trial": outcome.best_trial,
            "study": study.study_name,
            "optuna_storage": optuna_storage.display_url,
            "trials_total": outcome.trials_total,
            "trials_this_run": len(outcome.trials_this_run),
            "pruned_this_run": outcome.pruned_this_run,
            "workers": len(reports),
            "trials_by_worker": dg.MetadataValue.json(
                [
                    {
                        "worker": r["worker"],
                        "trials": r["ran"],
                        "host": r["host"],
                        "pid": r["pid"],
                        "seconds": r["seconds"],
                    }
                    for r in reports
                ]
            ),
            "param_importances": dg.MetadataValue.json(outcome.importances),
            "optimization_history": dg.MetadataValue.json(
                [
                    {"trial": t.number, "state": t.state, "value": t.value, "seconds": t.seconds}
                    for t in outcome.history
                ]
            ),
            "device": devices[0] if len(devices) == 1 else ",".join(devices),
            "partition_range": first["partition_range"],
            "mlflow_run": dg.MetadataValue.url(mlflow_tracking.run_url(experiment_id, session)),
            "mlflow_run_id": session,
        },
    )
