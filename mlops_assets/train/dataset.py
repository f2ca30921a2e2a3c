"""The training set: a window of feature days pinned to Delta versions, split by time.

Everything a model version needs to find its data again is in ``TrainingSetSpec``: the days,
the Delta version of the feature table it was read at, and the row count and content hash of
what was read. ``load_training_set`` rebuilds the same rows from the spec alone (Delta time
travel), which is how a model version's training set is verified later.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

from mlops_assets.features.definition import FEATURE_COLUMNS, LABEL_COLUMN
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.tables import TRANSACTION_FEATURES, VALIDATED_TRANSACTIONS
from mlops_assets.train.split import TrainingWindow, choose_window

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

#: The columns a training set holds (and that its content hash covers), in this order.
TRAINING_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "txn_date",
    "type",
    *FEATURE_COLUMNS,
    LABEL_COLUMN,
)


@dataclass(frozen=True)
class TrainingSetSpec:
    """Where a training set comes from and what it contained."""

    fit_days: tuple[str, ...]
    holdout_days: tuple[str, ...]
    features_version: int
    validated_version: int | None
    rows: int
    content_hash: str

    @property
    def first_day(self) -> str:
        return self.fit_days[0]

    @property
    def last_day(self) -> str:
        return self.holdout_days[-1]

    @property
    def partition_range(self) -> str:
        return f"{self.first_day}..{self.last_day}"

    @property
    def tuning_days(self) -> tuple[str, ...]:
        """The last fit day: validation for tuning, pruning and the decision threshold."""
        return self.fit_days[-1:]

    @property
    def train_days(self) -> tuple[str, ...]:
        """The fit days before the tuning day (all of them when there is only one)."""
        return self.fit_days[:-1] if len(self.fit_days) > 1 else self.fit_days

    def as_metadata(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_metadata(cls, values: dict[str, object]) -> TrainingSetSpec:
        return cls(
            fit_days=tuple(values["fit_days"]),  # type: ignore[arg-type]
            holdout_days=tuple(values["holdout_days"]),  # type: ignore[arg-type]
            features_version=int(values["features_version"]),  # type: ignore[arg-type]
            validated_version=(
                None
                if values.get("validated_version") is None
                else int(values["validated_version"])  # type: ignore[arg-type]
            ),
            rows=int(values["rows"]),  # type: ignore[arg-type]
            content_hash=str(values["content_hash"]),
        )


@dataclass(frozen=True)
class TrainingSet:
    """The rows of a training set, and the spec that pins them."""

    spec: TrainingSetSpec
    frame: pd.DataFrame

    def days(self, days: tuple[str, ...]) -> pd.DataFrame:
        return self.frame[self.frame["txn_date"].isin(days)]

    @property
    def train(self) -> pd.DataFrame:
        return self.days(self.spec.train_days)

    @property
    def tuning(self) -> pd.DataFrame:
        return self.days(self.spec.tuning_days)

    @property
    def holdout(self) -> pd.DataFrame:
        return self.days(self.spec.holdout_days)


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of the rows' values, independent of row order (rows sorted by id first)."""
    ordered = frame.loc[:, list(TRAINING_COLUMNS)].sort_values("transaction_id", kind="stable")
    return hashlib.sha256(row_hashes(ordered).tobytes()).hexdigest()


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per row of the training columns: what ``content_hash`` digests, in the
    rows' order (a row's hash depends on its values only, so batches can be hashed apart)."""
    import numpy as np
    import pandas as pd

    hashed = pd.util.hash_pandas_object(frame.loc[:, list(TRAINING_COLUMNS)], index=False)
    return hashed.to_numpy(dtype=np.uint64)


def complete_feature_days(lake: DeltaLake) -> list[date]:
    """Feature days whose previous day was validated (so their 24-hour history is complete)."""
    validated = set(lake.days(VALIDATED_TRANSACTIONS))
    return [d for d in lake.days(TRANSACTION_FEATURES) if d - timedelta(days=1) in validated]


def read_window(
    lake: DeltaLake, fit_days: tuple[str, ...], holdout_days: tuple[str, ...], version: int
) -> pd.DataFrame:
    """The training columns of those days from the feature table at ``version``."""
    days = [date.fromisoformat(d) for d in (*fit_days, *holdout_days)]
    frame = as_frame(
        lake.read(TRANSACTION_FEATURES, days=days, columns=list(TRAINING_COLUMNS), version=version)
    )
    return frame.sort_values("transaction_id", kind="stable").reset_index(drop=True)


def as_frame(table: pa.Table) -> pd.DataFrame:
    """Rows read from the feature table as the training code holds them: pandas, with
    ``txn_date`` (when read) as ISO-date text. The in-memory and batched reads share it."""
    import pandas as pd

    frame = table.to_pandas()
    if "txn_date" in frame.columns:
        frame["txn_date"] = pd.to_datetime(frame["txn_date"]).dt.strftime("%Y-%m-%d")
    return frame


def select_training_set(
    lake: DeltaLake, window_days: int, holdout_days: int, end: date | None = None
) -> TrainingSet:
    """Choose the latest complete window up to ``end``, read it at the current table version."""
    window: TrainingWindow = choose_window(
        complete_feature_days(lake), window_days, holdout_days, end
    )
    version = lake.version(TRANSACTION_FEATURES)
    assert version is not None  # choose_window found feature days
    fit = tuple(d.isoformat() for d in window.fit_days)
    holdout = tuple(d.isoformat() for d in window.holdout_days)
    frame = read_window(lake, fit, holdout, version)
    spec = TrainingSetSpec(
        fit_days=fit,
        holdout_days=holdout,
        features_version=version,
        validated_version=lake.version(VALIDATED_TRANSACTIONS),
        rows=len(frame),
        content_hash=content_hash(frame),
    )
    return TrainingSet(spec=spec, frame=frame)


def load_training_set(lake: DeltaLake, spec: TrainingSetSpec) -> TrainingSet:
    """The rows a spec describes, read again with Delta time travel (not verified here)."""
    frame = read_window(lake, spec.fit_days, spec.holdout_days, spec.features_version)
    return TrainingSet(spec=spec, frame=frame)


@dataclass(frozen=True)
class Verification:
    """A rebuilt training set compared with what its spec recorded."""

    expected_rows: int
    rows: int
    expected_hash: str
    content_hash: str

    @property
    def matches(self) -> bool:
        return self.rows == self.expected_rows and self.content_hash == self.expected_hash


def verify_training_set(lake: DeltaLake, spec: TrainingSetSpec) -> Verification:
    """Rebuild the rows of ``spec`` and compare their count and content hash."""
    rebuilt = load_training_set(lake, spec)
    return Verification(
        expected_rows=spec.rows,
        rows=len(rebuilt.frame),
        expected_hash=spec.content_hash,
        content_hash=content_hash(rebuilt.frame),
    )
