"""Prediction-log append benchmark: what one micro-batch write costs as ``served_predictions``
gains files, with and without the writer's compaction, against the cost of the first writes.

The model service writes one Delta append (one small file) every 5 s per replica: 17,000 a day.
Each run here appends ``--appends`` micro-batches of ``--rows`` rows in the log's own schema
(``LOG_SCHEMA``) to one day of a fresh local table through ``DeltaLake.appender``, as the
service's writer does, and reports the median append time per block of ``--block`` appends:

* without compaction (``compact_every=0``): the table holds one more file per append;
* with the service's default (``compact_every=50``): the day is compacted every 50 appends
  (the compaction's own time included in the append that triggers it). Appends still grow
  slowly, with the removed files and commit files the table keeps (within a run none is old
  enough to expire: the service's table keeps them a day and two days);
* the same with the retention compressed to the run's pace (20 s for both): this is the
  steady state the service's table reaches once its retention is passed.

The floor is the median of the first 20 appends without compaction (a table of a few files),
measured in the same run; each block's ratio to it is printed. Target: in the steady state (the
third run) the last block within 2x the floor; without compaction the ratio grows with the files.

Usage: ``.venv/bin/python bench/log_append_bench.py [--appends 1200] [--strict]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
DAY = date(2026, 1, 5)
TARGET_RATIO = 2.0
FLOOR_APPENDS = 20


def micro_batch(rows: int, seed: int) -> pa.Table:
    """``rows`` served predictions of ``DAY`` in the log's schema."""
    from mlops_assets.features.definition import FEATURE_COLUMNS
    from mlops_assets.serve.prediction_log import LOG_SCHEMA

    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    scores = rng.uniform(0, 1, rows)
    columns = {
        "transaction_id": [f"t{seed}-{i}" for i in range(rows)],
        "txn_date": [DAY] * rows,
        "timestamp": [datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)] * rows,
        "type": ["TRANSFER"] * rows,
        "nameOrig": [f"C{i}" for i in rng.integers(0, 10**6, rows)],
        "nameDest": [f"C{i}" for i in rng.integers(0, 10**6, rows)],
        **{name: rng.uniform(0, 1e4, rows) for name in FEATURE_COLUMNS},
        "fraud_score": scores,
        "is_fraud_predicted": scores >= 0.5,
        "threshold": [0.5] * rows,
        "model_name": ["fraud-detector"] * rows,
        "model_alias": ["champion"] * rows,
        "model_version": [3] * rows,
        "endpoint": ["/predict"] * rows,
        "served_at": [now] * rows,
        "latency_ms": rng.uniform(1, 20, rows),
        "shadow_model_version": [None] * rows,
        "shadow_fraud_score": [None] * rows,
        "shadow_is_fraud_predicted": [None] * rows,
    }
    return pa.table(columns, schema=LOG_SCHEMA)


def run(
    appends: int, rows: int, block: int, compact_every: int, retention: str | None = None
) -> tuple[list[float], float]:
    """Median append time (ms) of each block of ``block`` appends to the service's table (its
    retention compressed to ``retention`` when given), and of the first ``FLOOR_APPENDS``."""
    from mlops_assets.resources.lake import DeltaLake
    from mlops_assets.tables import SERVED_PREDICTIONS, LakeTable

    table = SERVED_PREDICTIONS
    if retention is not None:
        table = LakeTable(
            table.layer,
            table.name,
            properties=(
                ("delta.deletedFileRetentionDuration", retention),
                ("delta.logRetentionDuration", retention),
                ("delta.enableExpiredLogCleanup", "true"),
            ),
        )
    lake = DeltaLake(root_uri=tempfile.mkdtemp(prefix="log_append_bench_"))
    appender = lake.appender(table, compact_every)
    batches = [micro_batch(rows, seed) for seed in range(8)]
    medians, times, first = [], [], 0.0
    for i in range(appends):
        began = time.perf_counter()
        appender(batches[i % len(batches)])
        times.append((time.perf_counter() - began) * 1000.0)
        if i == FLOOR_APPENDS - 1:
            first = float(np.median(times))
        if len(times) == block:
            medians.append(float(np.median(times)))
            files = lake.day_files(table, DAY)
            print(
                f"  compact_every={compact_every}: appends {i + 1 - block + 1}-{i + 1}: "
                f"median {medians[-1]:.1f} ms ({files} files now)",
                flush=True,
            )
            times = []
    return medians, first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=1200)
    parser.add_argument("--rows", type=int, default=1000, help="rows per micro-batch")
    parser.add_argument("--block", type=int, default=300)
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    print("without compaction:", flush=True)
    plain, floor = run(args.appends, args.rows, args.block, compact_every=0)
    print("with the service's compaction:", flush=True)
    compacted, _ = run(args.appends, args.rows, args.block, compact_every=50)
    print("with the service's compaction, retention compressed to 20 s:", flush=True)
    steady, _ = run(args.appends, args.rows, args.block, 50, retention="interval 20 seconds")
    print(
        f"\n== prediction-log appends of {args.rows} rows; floor (the first {FLOOR_APPENDS} "
        f"appends) {floor:.1f} ms =="
    )
    for index, (without, with_, settled) in enumerate(zip(plain, compacted, steady, strict=True)):
        print(
            f"block {index + 1}: without compaction {without:.1f} ms ({without / floor:.2f}x), "
            f"with {with_:.1f} ms ({with_ / floor:.2f}x), "
            f"steady state {settled:.1f} ms ({settled / floor:.2f}x)"
        )
    met = steady[-1] <= TARGET_RATIO * floor
    print(
        f"target: in the steady state the last block within {TARGET_RATIO:.0f}x the floor: "
        f"{'met' if met else 'MISSED'} ({steady[-1] / floor:.2f}x)"
    )
    return 1 if args.strict and not met else 0


if __name__ == "__main__":
    sys.exit(main())
