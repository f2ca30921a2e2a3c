"""The A/B comparison of the model versions that served live traffic (pure logic, no Dagster).

From the service's prediction log (``served_predictions``: every answer names the version that
decided it, the champion or a canary) and the late labels: per version and day the volume,
flagged share and mean score, and where labels exist precision, recall and PR-AUC; then each
other version against the champion over the whole window, with two-sided two-proportion z-tests
(flagged share on all its transactions; recall on the labelled frauds; precision on the
flagged labelled rows) and a plain verdict.

A transaction answered several times by one version (a client's retry) counts once: the last
answer stands.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl


ALPHA = 0.01
MIN_ROWS = 200  # per version, for a flagged-share test
MIN_FRAUD_LABELS = 20  # per version, for a recall test
MIN_FLAGGED_LABELS = 20  # per version, for a precision test


@dataclass(frozen=True)
class VersionFigures:
    version: int
    alias: str
    day: str  # ISO date, or "window"
    volume: int
    flagged_share: float
    mean_score: float
    labelled: int
    fraud: int
    flagged_labelled: int
    caught: int
    precision: float  # NaN without a flagged labelled row
    recall: float  # NaN without a fraud label
    pr_auc: float  # NaN without a fraud label

    def as_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }


@dataclass(frozen=True)
class Difference:
    metric: str
    champion: float
    other: float
    p_value: float | None  # None: too few rows to test
    significant: bool


@dataclass(frozen=True)
class Comparison:
    champion: int
    other: int
    differences: list[Difference]
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "champion": self.champion,
            "other": self.other,
            "verdict": self.verdict,
            "differences": [asdict(d) for d in self.differences],
        }


def two_proportion_p_value(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test of x1/n1 against x2/n2."""
    from scipy.stats import norm

    pooled = (x1 + x2) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if spread == 0:
        return 1.0
    z = (x1 / n1 - x2 / n2) / spread
    return float(2 * norm.sf(abs(z)))


def last_answers(served: pl.DataFrame) -> pl.DataFrame:
    """One row per transaction and version: its last answer."""
    return served.sort("served_at").unique(
        subset=["transaction_id", "model_version"], keep="last", maintain_order=True
    )


def _figures(version: int, alias: str, day: str, rows: pl.DataFrame) -> VersionFigures:
    import polars as pl
    from sklearn.metrics import average_precision_score

    labelled = rows.filter(pl.col("isFraud").is_not_null())
    labels = labelled["isFraud"].cast(pl.Int64).to_numpy()
    flagged = labelled["is_fraud_predicted"].to_numpy()
    fraud = int(labels.sum())
    caught = int((labels.astype(bool) & flagged).sum())
    flagged_labelled = int(flagged.sum())
    return VersionFigures(
        version=version,
        alias=alias,
        day=day,
        volume=rows.height,
        flagged_share=float(rows["is_fraud_predicted"].mean() or 0.0),
        mean_score=float(rows["fraud_score"].mean() or 0.0),
        labelled=labelled.height,
        fraud=fraud,
        flagged_labelled=flagged_labelled,
        caught=caught,
        precision=caught / flagged_labelled if flagged_labelled else float("nan"),
        recall=caught / fraud if fraud else float("nan"),
        pr_auc=float(average_precision_score(labels, labelled["fraud_score"].to_numpy()))
        if fraud and fraud < len(labels)
        else float("nan"),
    )


def version_figures(
    served: pl.DataFrame, labels: pl.DataFrame
) -> tuple[list[VersionFigures], list[VersionFigures]]:
    """(per version and day, per version over the window), from the log's rows
    (``transaction_id``, ``txn_date``, ``model_version``, ``model_alias``, ``fraud_score``,
    ``is_fraud_predicted``, ``served_at``) and the labels (``transaction_id``, ``isFraud``)."""
    import polars as pl

    answers = last_answers(served).join(
        labels.select("transaction_id", "isFraud").unique("transaction_id"),
        on="transaction_id",
        how="left",
    )
    aliases = {
        int(v): str(a)
        for v, a, _ in answers.group_by("model_version", "model_alias")
        .len()
        .sort("len")
        .iter_rows()
    }
    per_day: list[VersionFigures] = []
    window: list[VersionFigures] = []
    for version in sorted(aliases):
        rows = answers.filter(pl.col("model_version") == version)
        window.append(_figures(version, aliases[version], "window", rows))
        for day in sorted(rows["txn_date"].unique().to_list()):
            per_day.append(
                _figures(
                    version, aliases[version], str(day), rows.filter(pl.col("txn_date") == day)
                )
            )
    return per_day, window


def champion_of(window: list[VersionFigures]) -> VersionFigures:
    """The champion of the window: the version served as ``champion`` on most rows (else the
    one with the most rows)."""
    champions = [f for f in window if f.alias == "champion"] or window
    return max(champions, key=lambda f: f.volume)


def compare(champion: VersionFigures, other: VersionFigures, alpha: float = ALPHA) -> Comparison:
    """The other version against the champion, with a verdict in words."""
    tests = [
        ("flagged_share", champion.flagged_share, other.flagged_share,
         (round(champion.flagged_share * champion.volume), champion.volume,
          round(other.flagged_share * other.volume), other.volume), MIN_ROWS),
        ("recall", champion.recall, other.recall,
         (champion.caught, champion.fraud, other.caught, other.fraud), MIN_FRAUD_LABELS),
        ("precision", champion.precision, other.precision,
         (champion.caught, champion.flagged_labelled, other.caught, other.flagged_labelled),
         MIN_FLAGGED_LABELS),
    ]  # fmt: skip
    differences: list[Difference] = []
    for metric, left, right, (x1, n1, x2, n2), minimum in tests:
        if min(n1, n2) < minimum:
            differences.append(Difference(metric, left, right, None, False))
            continue
        p_value = two_proportion_p_value(x1, n1, x2, n2)
        differences.append(Difference(metric, left, right, p_value, p_value < alpha))
    return Comparison(champion.version, other.version, differences, _verdict(other, differences))


def _verdict(other: VersionFigures, differences: list[Difference]) -> str:
    words = []
    for d in differences:
        if d.significant:
            direction = "more" if d.metric == "flagged_share" else "higher"
            if d.other < d.champion:
                direction = "less" if d.metric == "flagged_share" else "lower"
            subject = "flags" if d.metric == "flagged_share" else f"has {d.metric}"
            words.append(
                f"v{other.version} {subject} significantly {direction} "
                f"({d.other:.3f} vs {d.champion:.3f}, p = {d.p_value:.1e})"
            )
    quality_untested = all(d.p_value is None for d in differences if d.metric != "flagged_share")
    if not words:
        text = "no significant difference"
        if quality_untested:
            text += "; insufficient labels to compare precision and recall"
        return text
    if quality_untested:
        words.append("insufficient labels to compare precision and recall")
    return "; ".join(words)


def quality_worse(comparison: Comparison) -> list[Difference]:
    """The label-based differences where the other version is significantly worse."""
    return [
        d
        for d in comparison.differences
        if d.metric in ("recall", "precision") and d.significant and d.other < d.champion
    ]


def markdown(rows: list[VersionFigures]) -> str:
    lines = [
        "| version | alias | day | volume | flagged share | mean score | labelled | precision "
        "| recall | PR-AUC |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in rows:
        lines.append(
            f"| v{f.version} | {f.alias} | {f.day} | {f.volume} | {f.flagged_share:.2%} | "
            f"{f.mean_score:.4f} | {f.labelled} | {_figure(f.precision)} | {_figure(f.recall)} | "
            f"{_figure(f.pr_auc)} |"
        )
    return "\n".join(lines)


def _figure(value: float) -> str:
    import numpy as np

    return "-" if np.isnan(value) else f"{value:.3f}"
