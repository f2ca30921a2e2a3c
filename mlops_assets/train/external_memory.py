"""Training sets larger than memory: the plan that picks the path, and the pinned rows in batches.

A candidate fits in memory while the estimated peak of the in-memory fit of its fit rows (the
training days) is within the memory budget (``PipelinePolicy``'s ``training_memory_budget_mb``,
from ``MLOPS_TRAINING_MEMORY_BUDGET_MB``). Above it, XGBoost
trains from an external-memory iterator (``train/xgboost_external.py``) over ``feature_batches``:
the fit days read from Delta at the training set's pinned version, at most ``batch_rows`` rows
at a time. The candidate's other reads stream too (``stream_training_set``): the content hash is
checked batch by batch, the tuning and holdout days are kept whole (a day each by default), and
of the fit rows only a sample is kept (the model's input example and the drift reference).

Heavy libraries (pandas, pyarrow, numpy) are imported inside the functions: the code location
imports this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mlops_assets.features.definition import FEATURE_COLUMNS, LABEL_COLUMN
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.tables import PARTITION_COLUMN, TRANSACTION_FEATURES
from mlops_assets.train.dataset import TRAINING_COLUMNS, TrainingSetSpec, as_frame, row_hashes

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

TrainingPath = Literal["in_memory", "external_memory"]

#: the columns an XGBoost fit reads: the model inputs and the label
FIT_COLUMNS: tuple[str, ...] = (*FEATURE_COLUMNS, LABEL_COLUMN)
#: bytes per fit row of the in-memory fit's float64 matrix (features and label)
FIT_ROW_BYTES = 8 * len(FIT_COLUMNS)
#: the in-memory fit's peak RSS growth over that matrix: the whole set read (Arrow, then pandas
#: with text columns), its content hash, the train days' copy, the float64 inputs, XGBoost's
#: matrix and gradients (``bench/external_memory_bench.py``: 3,739 MB for 2M fit rows, 9.8x)
IN_MEMORY_OVERHEAD = 10
#: one batch's matrix may take this share of the budget: while it is handed over, its Arrow,
#: pandas and float64 copies are held at once
BATCH_SHARE = 0.25
MIN_BATCH_ROWS = 1_024
_MB = 1 << 20


@dataclass(frozen=True)
class TrainingDataPlan:
    """How a fit reads its rows: whole (``in_memory``) or in batches (``external_memory``)."""

    path: TrainingPath
    fit_rows: int
    estimated_mb: float
    budget_mb: float
    batch_rows: int

    @property
    def external(self) -> bool:
        return self.path == "external_memory"

    @property
    def over_budget(self) -> bool:
        return self.estimated_mb > self.budget_mb

    def describe(self, family: str) -> str:
        """One log line: the path taken and why."""
        size = f"{self.fit_rows:,} fit rows, about {self.estimated_mb:,.1f} MB in memory"
        budget = f"the training memory budget of {self.budget_mb:,.0f} MB"
        if self.external:
            return (
                f"{family}: {size}, over {budget}: training from an external-memory iterator, "
                f"batches of at most {self.batch_rows:,} rows"
            )
        if self.over_budget:
            return f"{family}: {size}, over {budget}, but {family} trains in memory only"
        return f"{family}: {size}, within {budget}: training in memory"

    def as_metadata(self) -> dict[str, object]:
        return {
            "path": self.path,
            "fit_rows": self.fit_rows,
            "estimated_mb": round(self.estimated_mb, 3),
            "budget_mb": self.budget_mb,
            "batch_rows": self.batch_rows,
        }


def plan_training_data(
    fit_rows: int, budget_mb: float, external_supported: bool = True
) -> TrainingDataPlan:
    """In memory while the in-memory fit of ``fit_rows`` is estimated to peak within the budget
    (or the family has no external-memory fit); otherwise in batches sized so that one batch's
    copies stay within about the budget."""
    if budget_mb < 0:
        raise ValueError(f"The training memory budget must be 0 MB or more, not {budget_mb}")
    estimated_mb = fit_rows * FIT_ROW_BYTES * IN_MEMORY_OVERHEAD / _MB
    external = external_supported and estimated_mb > budget_mb
    batch_rows = max(MIN_BATCH_ROWS, int(budget_mb * _MB * BATCH_SHARE / FIT_ROW_BYTES))
    return TrainingDataPlan(
        path="external_memory" if external else "in_memory",
        fit_rows=fit_rows,
        estimated_mb=estimated_mb,
        budget_mb=budget_mb,
        batch_rows=batch_rows,
    )


def day_filter(days: Sequence[str]) -> pc.Expression:
    """The row filter of some ``txn_date`` partitions (ISO dates), as ``DeltaLake.read`` uses."""
    from pyarrow.parquet import filters_to_expression

    return filters_to_expression([(PARTITION_COLUMN, "in", list(days))])


def count_rows(lake: DeltaLake, days: Sequence[str], version: int) -> int:
    """Rows of those days of the feature table at ``version``, from the Parquet footers."""
    if not days:
        return 0
    return lake.dataset(TRANSACTION_FEATURES, version).count_rows(filter=day_filter(days))


def rechunk(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """The rows of ``batches`` as tables of exactly ``rows`` rows (the last one may be short)."""
    import pyarrow as pa

    if rows < 1:
        raise ValueError(f"rows must be at least 1, not {rows}")
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if not batch.num_rows:
            continue
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending)


def read_batches(
    lake: DeltaLake,
    days: Sequence[str],
    version: int,
    batch_rows: int,
    columns: Sequence[str] = TRAINING_COLUMNS,
) -> Iterator[pa.Table]:
    """Those days of the feature table at ``version``, ``batch_rows`` rows at a time.

    The scanner reads one Parquet batch ahead in one file at a time, so what is held is about
    two batches, however many days are read.
    """
    if not days:
        return
    scanned = lake.dataset(TRANSACTION_FEATURES, version).to_batches(
        columns=list(columns),
        filter=day_filter(days),
        batch_size=batch_rows,
        batch_readahead=1,
        fragment_readahead=1,
    )
    yield from rechunk(scanned, batch_rows)


def feature_batches(
    lake: DeltaLake,
    days: Sequence[str],
    version: int,
    batch_rows: int,
    columns: Sequence[str] = FIT_COLUMNS,
) -> Iterator[pd.DataFrame]:
    """``read_batches`` as pandas frames, converted as the in-memory read converts them."""
    for table in read_batches(lake, days, version, batch_rows, columns):
        yield as_frame(table)


@dataclass(frozen=True)
class StreamedTrainingSet:
    """A pinned training set read batch by batch: its hash, its small splits, a fit sample."""

    spec: TrainingSetSpec
    rows: int
    content_hash: str
    tuning: pd.DataFrame
    holdout: pd.DataFrame
    train_rows: int
    #: a uniform sample of the train days' rows (of the requested size, or all of them)
    train_sample: pd.DataFrame
    batches: int
    max_batch_rows: int

    @property
    def matches(self) -> bool:
        """The rows read are the rows the spec recorded (count and content hash)."""
        return self.rows == self.spec.rows and self.content_hash == self.spec.content_hash


def stream_training_set(
    lake: DeltaLake,
    spec: TrainingSetSpec,
    batch_rows: int,
    sample_rows: int,
    seed: int = 0,
) -> StreamedTrainingSet:
    """Read ``spec``'s rows once, ``batch_rows`` at a time: the content hash of them all (equal
    to ``content_hash`` of the whole frame), the tuning and holdout days whole (sorted by id, as
    in ``TrainingSet``), and a seeded uniform sample of ``sample_rows`` train-day rows (all of
    them when there are fewer)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    days = (*spec.fit_days, *spec.holdout_days)
    train_days, tuning_days = list(spec.train_days), list(spec.tuning_days)
    holdout_days = list(spec.holdout_days)
    train_rows = count_rows(lake, train_days, spec.features_version)
    # which train-day rows (counted in reading order) the sample keeps, drawn before reading
    picks = np.sort(
        np.random.default_rng(seed).choice(
            train_rows, size=min(sample_rows, train_rows), replace=False
        )
    )
    seen = 0
    ids: list[pa.ChunkedArray] = []
    hashes: list[np.ndarray] = []
    tuning: list[pd.DataFrame] = []
    holdout: list[pd.DataFrame] = []
    sample: list[pd.DataFrame] = []
    batches = max_rows = 0
    for table in read_batches(lake, days, spec.features_version, batch_rows):
        batches, max_rows = batches + 1, max(max_rows, table.num_rows)
        frame = as_frame(table)
        ids.append(table.column("transaction_id"))
        hashes.append(row_hashes(frame))
        day = frame["txn_date"]
        tuning.append(frame[day.isin(tuning_days)])
        holdout.append(frame[day.isin(holdout_days)])
        in_train = np.flatnonzero(day.isin(train_days).to_numpy())
        low, high = np.searchsorted(picks, [seen, seen + len(in_train)])
        sample.append(frame.iloc[in_train[picks[low:high] - seen]])
        seen += len(in_train)
    rows = sum(len(h) for h in hashes)
    digest = hashlib.sha256()
    if rows:
        order = pc.sort_indices(pa.chunked_array([c for i in ids for c in i.chunks])).to_numpy()
        digest.update(np.concatenate(hashes)[order].tobytes())
    schema = lake.dataset(TRANSACTION_FEATURES, spec.features_version).schema
    empty = as_frame(schema.empty_table().select(list(TRAINING_COLUMNS)))
    train_sample = _concat(sample, empty)
    return StreamedTrainingSet(
        spec=spec,
        rows=rows,
        content_hash=digest.hexdigest(),
        tuning=_by_id(_concat(tuning, empty)),
        holdout=_by_id(_concat(holdout, empty)),
        train_rows=train_rows,
        train_sample=train_sample.reset_index(drop=True),
        batches=batches,
        max_batch_rows=max_rows,
    )


def _concat(frames: list[pd.DataFrame], empty: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    kept = [f for f in frames if len(f)]
    return pd.concat(kept, ignore_index=True) if kept else empty


def _by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("transaction_id", kind="stable").reset_index(drop=True)
