"""External-memory training benchmark: peak RSS and seconds of a candidate's XGBoost fit from an
external-memory iterator against the in-memory fit, on the same pinned training set in one run.

The set is bigger than the memory budget: ``--rows`` fit rows (float64 features and label, about
200 bytes a row) over five train days, a tuning day and a holdout day, written to a Delta lake in
a temporary directory. Each fit is ``train/candidate_fit.py``'s ``fit_candidate``, what the
``xgboost_candidate`` asset runs (verifying the set's row count and content hash, then fitting),
in a fresh process of its own, so that each process's peak RSS (Linux's ``VmHWM``, which
starts afresh in a new program, unlike ``getrusage``'s ``ru_maxrss``, which a spawned child
inherits from this parent) is that path's alone: in memory with a budget above the set, through
the iterator with ``--budget-mb``. Printed: peak RSS of the process, its growth over the
process after imports (what the fit itself added), seconds, holdout PR-AUC, and the ratios
external / in-memory. Linux only (``/proc``).

Usage: ``.venv/bin/python bench/external_memory_bench.py [--rows 2000000] [--budget-mb 64]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_bench import XGB_PARAMS, build_lake  # the same days and trees


def memory_mb(field: str) -> float:
    """A memory figure of this process from ``/proc/self/status`` (``VmRSS``, ``VmHWM``), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


def measure(root_uri: str, spec: dict[str, Any], budget_mb: float) -> dict[str, Any]:
    """In a fresh process: one ``fit_candidate`` of the pinned set; its figures."""
    # the libraries both fits import, loaded before the baseline
    import deltalake  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.dataset  # noqa: F401
    import xgboost  # noqa: F401
    from sklearn.metrics import average_precision_score

    from mlops_assets.features.definition import LABEL_COLUMN
    from mlops_assets.resources.lake import DeltaLake
    from mlops_assets.train.candidate_fit import fit_candidate
    from mlops_assets.train.dataset import TrainingSetSpec
    from mlops_assets.train.families import FAMILIES

    lake = DeltaLake(root_uri=root_uri)
    family = FAMILIES["xgboost"]
    baseline = memory_mb("VmRSS")
    began = time.perf_counter()
    fitted = fit_candidate(
        lake, TrainingSetSpec.from_metadata(spec), family, XGB_PARAMS, budget_mb, 50_000
    )
    seconds = time.perf_counter() - began
    peak = memory_mb("VmHWM")
    labels = fitted.holdout[LABEL_COLUMN].to_numpy()
    return {
        "path": fitted.plan.path,
        "seconds": seconds,
        "peak_mb": peak,
        "growth_mb": peak - baseline,
        "pr_auc": float(
            average_precision_score(labels, family.scores(fitted.model, fitted.holdout))
        ),
        "plan": fitted.plan,
        "batches": fitted.batches,
    }


def in_child(*args: Any) -> dict[str, Any]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="fit rows (default 2M)")
    parser.add_argument(
        "--budget-mb", type=float, default=64.0, help="memory budget of the external fit"
    )
    args = parser.parse_args(argv)

    from mlops_assets.resources.lake import DeltaLake
    from mlops_assets.train.dataset import select_training_set
    from mlops_assets.train.external_memory import count_rows, plan_training_data

    work = Path(tempfile.mkdtemp(prefix="mlops-extmem-bench-"))
    try:
        lake = DeltaLake(root_uri=str(work / "lake"))
        # a day of history, 5 train days, the tuning day, the holdout day
        days = [date(2026, 3, 1) + timedelta(days=i) for i in range(8)]
        print(f"Generating {len(days)} days x {args.rows // 5:,} rows ...", flush=True)
        began = time.perf_counter()
        build_lake(lake, args.rows // 5, days)
        print(f"  {time.perf_counter() - began:.0f}s", flush=True)
        spec = select_training_set(lake, window_days=7, holdout_days=1).spec
        fit_rows = count_rows(lake, spec.train_days, spec.features_version)
        plan = plan_training_data(fit_rows, args.budget_mb)
        print(
            f"{fit_rows:,} fit rows, about {plan.estimated_mb:,.0f} MB as float64, budget "
            f"{args.budget_mb:,.0f} MB: batches of {plan.batch_rows:,} rows",
            flush=True,
        )
        unbounded = plan.estimated_mb * 1_000 + 1  # in memory, whatever the set's size
        memory = in_child(lake.root_uri, spec.as_metadata(), unbounded)
        external = in_child(lake.root_uri, spec.as_metadata(), args.budget_mb)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert memory["path"] == "in_memory" and external["path"] == "external_memory"

    print()
    print(f"{'':<30}{'in memory':>12}{'external':>12}{'ratio':>8}")
    for key, label, fmt in (
        ("peak_mb", "peak RSS (MB)", ".0f"),
        ("growth_mb", "RSS growth of the fit (MB)", ".0f"),
        ("seconds", "seconds", ".1f"),
        ("pr_auc", "holdout PR-AUC", ".4f"),
    ):
        ratio = external[key] / memory[key] if memory[key] else float("nan")
        print(f"{label:<30}{memory[key]:>12{fmt}}{external[key]:>12{fmt}}{ratio:>8.2f}")
    stats = external["batches"]
    print()
    print(
        f"XGBoost {XGB_PARAMS['n_estimators']} rounds, depth {XGB_PARAMS['max_depth']}; the "
        f"iterator read {stats.batches} batches in {stats.passes} passes (at most "
        f"{stats.max_batch_rows:,} rows each); each fit includes reading and verifying the set"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
