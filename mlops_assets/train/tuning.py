"""Optuna studies with persistent storage: resumable, pruned, every trial reported.

A study per model family lives in the configured storage (SQLite by default, Postgres in
production). Running it again continues it: the sampler sees every earlier trial, and the best
parameters are those of the best trial so far, whichever run found it. Several processes may
work the same study at once (``run_trials`` in each, ``summarise`` afterwards): the storage
hands every trial a number once, and TPE's constant liar (Optuna's default) keeps concurrent
trials from sampling the same point.
"""

from __future__ import annotations

import fcntl
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

#: Called with the trial; returns the value to maximise (raise optuna.TrialPruned to prune).
Objective = Callable[[optuna.Trial], float]
#: Opens whatever records one trial (a nested MLflow run); gets the trial, yields nothing.
TrialRecorder = Callable[[optuna.Trial], AbstractContextManager[Any]]


@dataclass(frozen=True)
class TrialSummary:
    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    seconds: float | None


@dataclass(frozen=True)
class TuningOutcome:
    """What a study knows after this run's trials."""

    study_name: str
    best_value: float
    best_params: dict[str, Any]
    best_trial: int
    trials_total: int
    trials_this_run: list[TrialSummary]
    history: list[TrialSummary]
    importances: dict[str, float] = field(default_factory=dict)

    @property
    def pruned_this_run(self) -> int:
        return sum(t.state == "PRUNED" for t in self.trials_this_run)

    @property
    def completed_this_run(self) -> int:
        return sum(t.state == "COMPLETE" for t in self.trials_this_run)


def storage_for(url: str) -> optuna.storages.BaseStorage:
    """Optuna storage for a database URL (a SQLite file's directory is created)."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        # two tuning steps (processes) opening a fresh file at once both create its schema and
        # one fails on alembic_version: the first creation is serialised by a lock file
        with path.with_name(f"{path.name}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            # SQLite: wait for a concurrent writer instead of failing at once
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # a trial whose process died (e.g. an evicted pod) is marked failed after the grace period
        return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)


def redacted(url: str) -> str:
    """A storage URL without its password, for metadata and tags."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


def open_study(
    name: str,
    storage_url: str,
    seed: int = 0,
    warmup_steps: int = 5,
    sampler_seed: int | None = None,
) -> optuna.Study:
    """Create the study, or load it when it exists (so tuning resumes), maximising.

    The sampler's seed is offset by the trials already run, so a resumed study draws new
    candidates instead of repeating its first ones. ``sampler_seed`` sets it exactly instead
    (tuning workers get distinct seeds from the step that planned them).
    """
    # progress goes through run_study's log (the Dagster step log), not Optuna's own stderr
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage_for(storage_url)
    if sampler_seed is None:
        sampler_seed = seed + existing_trials(name, storage)
    return optuna.create_study(
        study_name=name,
        storage=storage,
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=sampler_seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup_steps),
    )


def existing_trials(name: str, storage: optuna.storages.BaseStorage) -> int:
    """How many trials the study holds (0 when it does not exist yet)."""
    try:
        return len(optuna.load_study(study_name=name, storage=storage).trials)
    except KeyError:
        return 0


def split_trials(n_trials: int, workers: int) -> list[int]:
    """``n_trials`` as shares for at most ``workers`` workers: sizes differ by one at most, sum
    to ``n_trials`` exactly, and no worker gets none (fewer workers when trials are few)."""
    if n_trials < 1 or workers < 1:
        raise ValueError(f"n_trials and workers must be at least 1 (got {n_trials}, {workers})")
    workers = min(workers, n_trials)
    share, extra = divmod(n_trials, workers)
    return [share + (i < extra) for i in range(workers)]


def _summary(trial: optuna.trial.FrozenTrial) -> TrialSummary:
    seconds = None
    if trial.datetime_start and trial.datetime_complete:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    return TrialSummary(
        number=trial.number,
        state=trial.state.name,
        value=trial.value,
        params=dict(trial.params),
        seconds=seconds,
    )


def importances(study: optuna.Study) -> dict[str, float]:
    """Parameter importances (fANOVA), or {} while there are too few finished trials."""
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(finished) < 2 or len({tuple(sorted(t.params.items())) for t in finished}) < 2:
        return {}
    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):  # e.g. every finished trial had the same value
        return {}


def run_trials(
    study: optuna.Study,
    objective: Objective,
    n_trials: int,
    timeout_seconds: float | None,
    record_trial: TrialRecorder,
    log: Callable[[str], None] = print,
) -> list[int]:
    """Run up to ``n_trials`` more trials within ``timeout_seconds``, report each one; the
    numbers of the trials this call ran (other processes may run trials of the study at the
    same time: theirs are not counted)."""
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1 (got {n_trials})")
    ran: list[int] = []

    def recorded(trial: optuna.Trial) -> float:
        with record_trial(trial):
            return objective(trial)

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        ran.append(trial.number)
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        try:
            best = f"{study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:
            best = "none yet"
        log(
            f"{study.study_name} trial {trial.number} [{len(ran)}/{n_trials}]: "
            f"{trial.state.name} value {value}; best {best}"
        )

    started = time.perf_counter()
    # enqueued trials exist already (WAITING) and run first
    study.optimize(
        recorded,
        n_trials=n_trials,
        timeout=timeout_seconds,
        callbacks=[progress],
        catch=(),
        gc_after_trial=False,
    )
    elapsed = time.perf_counter() - started
    log(f"{study.study_name}: {len(ran)} of {n_trials} trial(s) run, took {elapsed:.1f}s")
    return ran


def summarise(study: optuna.Study, this_run: Iterable[int]) -> TuningOutcome:
    """What the study knows now; ``this_run`` are the numbers of this materialization's trials
    (from one process or several)."""
    numbers = set(this_run)
    trials = study.trials
    try:
        best = study.best_trial
    except ValueError as error:
        raise RuntimeError(
            f"Study {study.study_name} has no completed trial yet (every trial so far was pruned "
            "or failed); run more trials or a longer time budget"
        ) from error
    return TuningOutcome(
        study_name=study.study_name,
        best_value=float(best.value),
        best_params=dict(best.params),
        best_trial=best.number,
        trials_total=len(trials),
        trials_this_run=[_summary(t) for t in trials if t.number in numbers],
        history=[_summary(t) for t in trials],
        importances=importances(study),
    )


def run_study(
    study: optuna.Study,
    objective: Objective,
    n_trials: int,
    timeout_seconds: float | None,
    record_trial: TrialRecorder,
    log: Callable[[str], None] = print,
) -> TuningOutcome:
    """Run up to ``n_trials`` more trials within ``timeout_seconds`` in this process; report
    each one; what the study knows afterwards."""
    ran = run_trials(study, objective, n_trials, timeout_seconds, record_trial, log)
    return summarise(study, ran)


def history_figures(
    study: optuna.Study, with_importances: bool | None = None
) -> Iterator[tuple[str, Any]]:
    """The optimisation history and (when computable, or ``with_importances`` when the caller
    knows) the importances, as matplotlib figures."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as optuna_plots

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield "optimization_history.png", optuna_plots.plot_optimization_history(study).figure
        if importances(study) if with_importances is None else with_importances:
            yield "param_importances.png", optuna_plots.plot_param_importances(study).figure
