"""Feature drift detection on top of Evidently 0.7 (new ``Report``/``Dataset`` API).

This module is pure: no Dagster, no I/O. It compares a reference frame with a current
frame column by column and returns a typed :class:`DriftSummary`, including the full
Evidently HTML report.

Evidently is imported lazily inside :func:`compute_drift` because importing it takes
several seconds; importing this module stays cheap.

Evidently picks the statistical test per column (see
``evidently/legacy/calculations/stattests/registry.py::_get_default_stattest``):

* reference with <= 1000 rows: K-S p-value (numerical), chi-square / Z-test p-value
  (categorical, or numerical with <= 5 unique values);
* reference with > 1000 rows: normed Wasserstein distance (numerical) and Jensen-Shannon
  distance (categorical, or numerical with <= 5 unique values).

For p-value tests *lower* scores mean drift; for distance tests *higher* scores do.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


_VALUE_DRIFT_TYPE = "ValueDrift"
_FAIL_STATUS = "FAIL"
_MIN_P_VALUE = 1e-300

# Display names Evidently reports for its built-in tests (the ``display_name`` of each
# ``StatTest`` in ``evidently/legacy/calculations/stattests/*.py``).
_P_VALUE_TESTS = frozenset(
    {
        "K-S p_value",
        "chi-square p_value",
        "Z-test p_value",
        "Anderson-Darling",
        "Cramer-von Mises",
        "Epps-Singleton",
        "Fisher's Exact test",
        "g_test",
        "Mann-Whitney U-rank test",
        "empirical_mmd",
        "t_test",
        "Total-Variation-Distance",
    }
)
_DISTANCE_TESTS = frozenset(
    {
        "Wasserstein distance (normed)",
        "Jensen-Shannon distance",
        "Hellinger distance",
        "Kullback-Leibler divergence",
        "PSI",
        "Energy-distance",
    }
)


@dataclass(frozen=True)
class ColumnDrift:
    """Drift result for one column.

    ``score``/``threshold`` are NaN and ``stattest`` starts with ``"not tested"`` for
    columns Evidently cannot test (no non-missing values on one side).
    """

    column: str
    stattest: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftSummary:
    """Dataset-level drift result.

    ``drifted_columns``/``total_columns``/``drift_share`` only count tested columns;
    untested columns are still listed (last) in ``columns``.
    """

    drift_share: float
    drifted_columns: int
    total_columns: int
    dataset_drift: bool
    columns: list[ColumnDrift]
    reference_rows: int
    current_rows: int
    sampled: bool
    html: str


def _check_columns(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: Sequence[str],
    categorical: Sequence[str],
) -> None:
    """Validate the requested column lists against both frames.

    Raises:
        ValueError: on empty frames, empty/duplicate/overlapping column lists, missing
            columns or non-numeric "numerical" columns.
    """
    import pandas as pd

    if reference.empty or len(reference) == 0:
        raise ValueError("reference frame is empty")
    if current.empty or len(current) == 0:
        raise ValueError("current frame is empty")
    requested = [*numerical, *categorical]
    if not requested:
        raise ValueError("no columns requested: pass at least one numerical or categorical column")
    duplicated = sorted({c for c in requested if requested.count(c) > 1})
    if duplicated:
        raise ValueError(
            f"columns listed more than once (or as both numerical and categorical): {duplicated}"
        )
    problems = [
        f"missing from {name} frame: {missing}"
        for name, frame in (("reference", reference), ("current", current))
        if (missing := [c for c in requested if c not in frame.columns])
    ]
    if problems:
        raise ValueError("requested drift columns not found; " + "; ".join(problems))
    non_numeric = sorted(
        {
            c
            for frame in (reference, current)
            for c in numerical
            if not pd.api.types.is_numeric_dtype(frame[c])
            or pd.api.types.is_complex_dtype(frame[c])
        }
    )
    if non_numeric:
        raise ValueError(f"numerical columns with a non-numeric dtype: {non_numeric}")


def sample_positions(n_rows: int, max_rows: int, rng: np.random.Generator) -> np.ndarray | None:
    """Sorted row positions of a without-replacement sample, or None when no sampling is needed."""
    import numpy as np

    if n_rows <= max_rows:
        return None
    return np.sort(rng.choice(n_rows, size=max_rows, replace=False))


def _prepare(
    frame: pd.DataFrame,
    numerical: Sequence[str],
    categorical: Sequence[str],
    positions: np.ndarray | None,
) -> pd.DataFrame:
    """Select (and optionally sample) the columns, normalising dtypes Evidently chokes on.

    Numerical columns become float64 (nullable ``Int64``/``Float64`` and bools break
    Evidently's correlation step); categorical columns become ``object`` (pandas
    ``category`` dtypes with different category sets on each side trigger warnings).
    Row order is preserved so Evidently's index-binned plots stay meaningful.
    """
    import numpy as np
    import pandas as pd

    if positions is not None:
        # sample rows first: this copies max_rows rows, not every row of a big day
        frame = frame.take(positions)
    subset = frame.loc[:, [*numerical, *categorical]]
    out = pd.DataFrame(
        {
            **{
                c: subset[c].astype("float64").replace([np.inf, -np.inf], np.nan) for c in numerical
            },
            **{c: subset[c].astype(object) for c in categorical},
        }
    )
    return out.reset_index(drop=True)


def _untestable(
    reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str]
) -> dict[str, str]:
    """Columns Evidently would reject (no non-missing value on a side) -> reason."""
    reasons: dict[str, str] = {}
    for column in columns:
        empty_sides = [
            name
            for name, frame in (("reference", reference), ("current", current))
            if frame[column].isna().all()
        ]
        if empty_sides:
            reasons[column] = f"not tested: no non-missing values in {' and '.join(empty_sides)}"
    return reasons


def _is_p_value_test(stattest: str, score: float, threshold: float, drifted: bool) -> bool:
    """Whether a low score means drift (p-value) rather than a high one (distance).

    Known Evidently tests are looked up by display name; for anything else (custom
    tests) the direction is inferred from Evidently's own drift decision.
    """
    if stattest in _P_VALUE_TESTS:
        return True
    if stattest in _DISTANCE_TESTS:
        return False
    if "p_value" in stattest.lower() or "p-value" in stattest.lower():
        return True
    return drifted == (score < threshold) and score != threshold


def drift_severity(column: ColumnDrift) -> float:
    """How far a column is past its threshold, comparable across test families.

    The result is 1.0 exactly at the threshold, above 1 when drifted, below 1 otherwise:

    * distance tests: ``score / threshold``;
    * p-value tests: ``log(p) / log(threshold)`` (e.g. p=1e-10 at threshold 0.05 gives
      ~7.7), which keeps tiny p-values from swamping distance ratios.

    Untested columns (NaN score) get ``-inf``.
    """
    score, threshold = column.score, column.threshold
    if math.isnan(score) or math.isnan(threshold):
        return -math.inf
    if _is_p_value_test(column.stattest, score, threshold, column.drifted):
        if 0.0 < threshold < 1.0:
            return abs(math.log(min(max(score, _MIN_P_VALUE), 1.0)) / math.log(threshold))
        return threshold / max(score, _MIN_P_VALUE)
    if threshold <= 0.0:
        return math.inf if score > 0 else 1.0
    return score / threshold


def _sort_key(column: ColumnDrift) -> tuple[bool, float, str]:
    """Drifted first, then by decreasing severity, then by name for determinism."""
    return (not column.drifted, -drift_severity(column), column.column)


def _type_name(config: Mapping[str, Any]) -> str:
    """Short metric type from an Evidently config.

    E.g. ``"evidently:metric_v2:ValueDrift"`` -> ``"ValueDrift"``.
    """
    return str(config.get("type", "")).rsplit(":", 1)[-1]


def _extract(snapshot_dict: Mapping[str, Any]) -> list[ColumnDrift]:
    """Per-column results from ``Snapshot.dict()``.

    ``ValueDrift`` metric entries carry the column, the resolved test (``method``), the
    resolved ``threshold`` and the score (``value``). The drift decision comes from the
    matching ``ValueDrift`` test (status FAIL = drifted), joined on the metric id.
    """
    tests = snapshot_dict.get("tests", [])
    tested_ids = {test["metric_config"]["metric_id"] for test in tests}
    failed_ids = {
        test["metric_config"]["metric_id"]
        for test in tests
        if str(getattr(test["status"], "value", test["status"])) == _FAIL_STATUS
    }
    columns: list[ColumnDrift] = []
    for metric in snapshot_dict["metrics"]:
        config = metric.get("config", {})
        if _type_name(config) != _VALUE_DRIFT_TYPE:
            continue
        stattest = str(config.get("method"))
        score = float(metric["value"])
        threshold = float(config.get("threshold", math.nan))
        if metric["id"] in tested_ids:
            drifted = metric["id"] in failed_ids
        else:  # defensive: no test emitted, decide from the known test direction
            is_p = _is_p_value_test(stattest, score, threshold, drifted=False)
            drifted = score < threshold if is_p else score >= threshold
        columns.append(ColumnDrift(str(config["column"]), stattest, score, threshold, drifted))
    return columns


def _run_evidently(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    drift_share_threshold: float,
) -> tuple[dict[str, Any], str]:
    """Run Evidently's ``DataDriftPreset``; return ``(Snapshot.dict(), standalone HTML)``."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    report = Report(
        [DataDriftPreset(columns=[*numerical, *categorical], drift_share=drift_share_threshold)],
        include_tests=True,  # ValueDrift emits a per-column pass/fail test only with this on
    )
    with warnings.catch_warnings():
        # np.corrcoef on constant columns: "invalid value encountered in divide" (harmless).
        warnings.filterwarnings(
            "ignore", category=RuntimeWarning, message=".*encountered in.*divide"
        )
        snapshot = report.run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
        html = snapshot.get_html_str(as_iframe=False)
    return snapshot.dict(), html


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    drift_share_threshold: float = 0.5,
    max_rows: int = 50_000,
    seed: int = 0,
) -> DriftSummary:
    """Compare ``current`` against ``reference`` column by column with Evidently.

    Args:
        reference: Baseline data (e.g. the training window).
        current: Data to check (e.g. the latest scoring window).
        numerical: Numerical feature columns (must be numeric in both frames).
        categorical: Categorical feature columns.
        drift_share_threshold: Dataset drift is flagged when the share of drifted
            columns is >= this value.
        max_rows: Each side is down-sampled (without replacement, row order kept) to at
            most this many rows.
        seed: Seed for the down-sampling.

    Returns:
        A :class:`DriftSummary` with columns sorted most-drifted first.

    Raises:
        ValueError: empty frames, missing/invalid columns, bad parameters, or no column
            with data to test.
    """
    import numpy as np

    if not 0.0 < drift_share_threshold <= 1.0:
        raise ValueError(f"drift_share_threshold must be in (0, 1], got {drift_share_threshold}")
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    numerical, categorical = list(numerical), list(categorical)
    _check_columns(reference, current, numerical, categorical)

    rng = np.random.default_rng(seed)
    ref_positions = sample_positions(len(reference), max_rows, rng)
    cur_positions = sample_positions(len(current), max_rows, rng)
    ref = _prepare(reference, numerical, categorical, ref_positions)
    cur = _prepare(current, numerical, categorical, cur_positions)

    skipped = _untestable(ref, cur, [*numerical, *categorical])
    tested_num = [c for c in numerical if c not in skipped]
    tested_cat = [c for c in categorical if c not in skipped]
    if not tested_num and not tested_cat:
        raise ValueError(f"no column has data to test on both sides: {skipped}")

    snapshot_dict, html = _run_evidently(ref, cur, tested_num, tested_cat, drift_share_threshold)
    tested = _extract(snapshot_dict)
    if len(tested) != len(tested_num) + len(tested_cat):
        raise RuntimeError(
            f"Evidently returned {len(tested)} ValueDrift results for "
            f"{len(tested_num) + len(tested_cat)} columns; snapshot format changed?"
        )

    # Derived from the per-column flags so the summary is self-consistent; this equals
    # Evidently's own DriftedColumnsCount (same options, same data).
    drifted_columns = sum(c.drifted for c in tested)
    total = len(tested)
    drift_share = drifted_columns / total
    untested = [ColumnDrift(c, reason, math.nan, math.nan, False) for c, reason in skipped.items()]
    return DriftSummary(
        drift_share=drift_share,
        drifted_columns=drifted_columns,
        total_columns=total,
        dataset_drift=drift_share >= drift_share_threshold,
        columns=sorted(tested, key=_sort_key) + untested,
        reference_rows=len(ref),
        current_rows=len(cur),
        sampled=ref_positions is not None or cur_positions is not None,
        html=html,
    )


def top_drifted(
    summary: DriftSummary, n: int = 5, *, only_drifted: bool = False
) -> dict[str, float]:
    """Column -> Evidently score for the ``n`` most drifted tested columns (for metadata).

    Follows ``summary.columns`` order (most drifted first); untested columns are skipped.
    With ``only_drifted=True`` columns below their threshold are left out as well.
    Note that scores of different tests are not on one scale (p-values vs distances).
    """
    picked = [
        c for c in summary.columns if not math.isnan(c.score) and (c.drifted or not only_drifted)
    ]
    return {c.column: c.score for c in picked[: max(n, 0)]}
