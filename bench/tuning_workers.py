"""Distributed tuning benchmark: the same study size with 1 tuning worker and with N, timed.

The real ``xgboost_tuning`` asset, materialized by Dagster's multiprocess executor (one process
per step, as one pod per step under Kubernetes), each time on a fresh study: ``--trials``
trials with ``workers=1`` and with ``workers=N``, alternating ``--repeats`` times (the best of
each is kept), in one run of this script, on the same training set and with the same parameter
sets (drawn once at random and enqueued in every study) and no pruning, so that every run
trains the same models. The study storage is the embedded SQLite file by default, a
throwaway PostgreSQL server with ``--postgres`` (the test suite's helper; needs the server
binaries). Each trial trains XGBoost on ``--threads`` threads (1 by default: a worker stands
for a pod with its own device, and on a small machine one worker using every core would leave
nothing to share).

Printed, for 1 and N workers, and their ratios: the job's wall time (everything: the step
processes' start-up, the plan, the trials, the best-trial step), the worker steps (first worker
step's start to the last one's end; each worker also reads the training set) and the trials
alone (first trial's start to the last one's end, from the study), and the summed seconds of
the trials. The speed-up is bounded by the free cores: 2x at best on a 2-core machine, less
what the steps' start-up costs. The cores actually free before each run (on a machine shared
with other work) are measured and printed with it.

Usage: ``.venv/bin/python bench/tuning_workers.py [--workers 2] [--trials 12] [--rows 40000]
[--threads 1] [--repeats 2] [--postgres]`` (``--rows``: rows per day; the training day and the
tuning day have as many).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # this script runs from bench/: its helpers are importable
sys.path.insert(0, str(BENCH.parent))

THREADS = "MLOPS_BENCH_XGBOOST_THREADS"
STUDY = "fraud_detector-xgboost"  # <MLOPS_MODEL_NAME>-xgboost


def tuning_job() -> Any:
    """``training_set`` and ``xgboost_tuning`` (XGBoost on ``THREADS`` threads) with the
    environment's resources; rebuilt in every step process by ``dg.reconstructable``."""
    import dagster as dg

    from mlops_assets.environment import build_resources
    from mlops_assets.settings import Settings
    from mlops_assets.train.assets import training_set
    from mlops_assets.train.families import XGBoostFamily
    from mlops_assets.train.tuning_asset import build_tuning_asset

    @dataclasses.dataclass(frozen=True)
    class UnprunedXGBoost(XGBoostFamily):
        """No pruning: which trials a pruner stops depends on the order trials finish in, which
        the workers change; without it every run does the same work."""

        def fit(self, train, params, validation=None, trial=None):
            return super().fit(train, params, validation=validation, trial=None)

    family = UnprunedXGBoost(threads=int(os.environ.get(THREADS, "1")))
    defs = dg.Definitions(
        assets=[training_set, build_tuning_asset(family)],
        resources=build_resources(Settings()),
        jobs=[
            dg.define_asset_job(
                "tuning", selection=["xgboost_tuning"], executor_def=dg.multiprocess_executor
            )
        ],
    )
    return defs.resolve_job_def("tuning")


@contextlib.contextmanager
def storages(postgres: bool, work: Path, labels: list[str]) -> Iterator[dict[str, str]]:
    """A fresh Optuna storage URL per label: SQLite files, or databases of a Postgres server."""
    if not postgres:
        yield {label: f"sqlite:///{work / 'optuna' / f'{label}.db'}" for label in labels}
        return
    from mlops_assets_tests.postgres import running_postgres_server

    with running_postgres_server() as server:
        yield {label: server.create_database(f"bench_{label}") for label in labels}


def _burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def free_cores(n: int = 5_000_000) -> float:
    """How many cores this process can get right now (2 = two pure-Python loops at once run
    as fast as one alone): the bound on any speed-up on a machine shared with other work."""
    import multiprocessing

    began = time.perf_counter()
    _burn(n)
    alone = time.perf_counter() - began
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_burn, [1, 1])  # the pool's processes are up before the clock starts
        began = time.perf_counter()
        pool.map(_burn, [n, n], chunksize=1)
        both = time.perf_counter() - began
    return 2 * alone / both


def same_candidates(n_trials: int) -> list[dict[str, Any]]:
    """``n_trials`` XGBoost parameter sets drawn at random (seeded) from the family's space:
    enqueued in both studies, so that 1 and N workers train the same models."""
    import optuna

    from mlops_assets.train.families import XGBoostFamily

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    draws = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    candidates = []
    for _ in range(n_trials):
        trial = draws.ask()
        XGBoostFamily().suggest(trial)
        candidates.append(dict(trial.params))
    return candidates


def trial_phase(instance: Any, run_id: str) -> tuple[float, dict[str, float]]:
    """Seconds from the first worker step's start to the last one's end; each step's seconds."""
    from data_day import step_seconds

    starts, ends = [], []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or "_trials[" not in (event.step_key or ""):
            continue
        if event.event_type_value == "STEP_START":
            starts.append(record.timestamp)
        elif event.event_type_value == "STEP_SUCCESS":
            ends.append(record.timestamp)
    return max(ends) - min(starts), step_seconds(instance, run_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="workers of the parallel run")
    parser.add_argument("--trials", type=int, default=12, help="trials per run (default 12)")
    parser.add_argument(
        "--rows", type=int, default=40_000, help="rows per day: training and tuning day"
    )
    parser.add_argument("--threads", type=int, default=1, help="XGBoost threads per trial")
    parser.add_argument("--postgres", action="store_true", help="Optuna on a throwaway Postgres")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each (2)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="mlops-tuning-bench-"))
    os.environ["MLOPS_HOME"] = str(work / "home")
    os.environ.setdefault("MLOPS_PARTITIONS_START", "2026-01-01")
    os.environ[THREADS] = str(args.threads)
    import dagster as dg
    import optuna
    from train_bench import build_lake

    from mlops_assets.environment import build_resources
    from mlops_assets.settings import Settings
    from mlops_assets.train.assets import training_set
    from mlops_assets.train.tuning import open_study

    # a history day, 2 fit days (train + tuning day) and the holdout day
    days = [date(2026, 3, 1) + timedelta(days=i) for i in range(4)]
    per_day = args.rows
    resources = build_resources(Settings())
    print(f"Generating {len(days)} days x {per_day:,} rows ...", flush=True)
    build_lake(resources["lake"], per_day, days)
    # alternating 1, N, 1, N... each run on a fresh study; the best of each is kept
    plan = [(w, f"w{w}_r{r}") for r in range(args.repeats) for w in (1, args.workers)]
    labels = [label for _, label in plan]
    results: dict[int, list[tuple[float, float, float, float]]] = {1: [], args.workers: []}
    (work / "dagster").mkdir()
    with (
        dg.instance_for_test(temp_dir=str(work / "dagster")) as instance,
        storages(args.postgres, work, labels) as urls,
    ):
        window = {"window_days": 3, "holdout_days": 1, "end_date": days[-1].isoformat()}
        done = dg.materialize(
            [training_set],
            resources=resources,
            instance=instance,
            run_config={"ops": {"training_set": {"config": window}}},
        )
        assert done.success
        candidates = same_candidates(args.trials)
        for workers, label in plan:
            os.environ["MLOPS_OPTUNA_STORAGE_URI"] = urls[label]  # the step processes inherit it
            study = open_study(STUDY, urls[label])
            for params in candidates:  # both runs train exactly the same models
                study.enqueue_trial(params)
            cores = free_cores()
            run_config = {
                "ops": {
                    "xgboost_tuning": {"config": {"n_trials": args.trials, "workers": workers}}
                },
                "execution": {"config": {"max_concurrent": workers + 1}},
                "loggers": {"console": {"config": {"log_level": "ERROR"}}},
            }
            began = time.perf_counter()
            result = dg.execute_job(
                dg.reconstructable(tuning_job), instance=instance, run_config=run_config
            )
            wall = time.perf_counter() - began
            assert result.success, f"the run with {workers} worker(s) failed"
            trials_phase, steps = trial_phase(instance, result.run_id)
            study = optuna.load_study(study_name=STUDY, storage=urls[label])
            assert len(study.trials) == args.trials
            trial_sum = sum(
                (t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials
            )
            first = min(t.datetime_start for t in study.trials)
            last = max(t.datetime_complete for t in study.trials)
            trials_span = (last - first).total_seconds()
            results[workers].append((wall, trials_phase, trials_span, trial_sum))
            print(
                f"  {workers} worker(s): job {wall:.1f}s, worker steps {trials_phase:.1f}s, "
                f"first trial start to last trial end {trials_span:.1f}s, trials summed "
                f"{trial_sum:.1f}s, best {study.best_value:.4f}; free cores before {cores:.2f}",
                flush=True,
            )
            print("    steps: " + ", ".join(f"{k} {v:.1f}s" for k, v in steps.items()), flush=True)

    one, many = (tuple(map(min, zip(*results[w], strict=True))) for w in (1, args.workers))
    storage = "Postgres" if args.postgres else "SQLite"
    print()
    print(
        f"{args.trials} XGBoost trials, {per_day:,} training rows and a {per_day:,}-row tuning "
        f"day, {args.threads} thread(s) per trial, Optuna on {storage}, {os.cpu_count()} CPU(s); "
        f"best of {args.repeats} alternating runs each"
    )
    print(f"{'':<34}{'1 worker':>10}{f'{args.workers} workers':>12}{'speed-up':>10}")
    rows = ("job wall time (s)", "worker steps (s)", "first trial to last trial (s)")
    for index, name in enumerate(rows):
        print(f"{name:<34}{one[index]:>10.1f}{many[index]:>12.1f}{one[index] / many[index]:>9.2f}x")
    print(f"{'trials summed (s)':<34}{one[3]:>10.1f}{many[3]:>12.1f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
