"""The ``model_ab_report`` asset: the versions that served live traffic, compared on it."""

import base64
import io
from datetime import date, timedelta

import dagster as dg
from pydantic import Field

from mlops_assets.monitor.ab_report import (
    VersionFigures,
    champion_of,
    compare,
    markdown,
    version_figures,
)
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.tables import SERVED_PREDICTIONS, TRANSACTION_LABELS

MODEL_AB_REPORT = dg.AssetKey("model_ab_report")
SERVED_COLUMNS = [
    "transaction_id",
    "txn_date",
    "model_version",
    "model_alias",
    "fraud_score",
    "is_fraud_predicted",
    "served_at",
]


class AbReportConfig(dg.Config):
    """Which days of served traffic to compare."""

    window_days: int = Field(7, ge=1, description="Days of served_predictions to compare.")
    end_date: str | None = Field(
        None, description="Last day of the window (ISO date); default: the latest served day."
    )


def _plot_html(per_day: list[VersionFigures], window: list[VersionFigures], table: str) -> str:
    """A self-contained HTML page: flagged share per day and recall per version, and the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (shares, recalls) = plt.subplots(1, 2, figsize=(11, 4))
    for version in sorted({f.version for f in per_day}):
        days = [f for f in per_day if f.version == version]
        shares.plot([f.day for f in days], [f.flagged_share for f in days], marker="o",
                    label=f"v{version} ({days[0].alias})")  # fmt: skip
    shares.set_title("Flagged share per day")
    shares.tick_params(axis="x", rotation=45)
    shares.legend()
    recalls.bar([f"v{f.version}" for f in window], [f.recall if f.fraud else 0 for f in window])
    recalls.set_title("Recall on labelled frauds (window)")
    recalls.set_ylim(0, 1)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    image = base64.b64encode(buffer.getvalue()).decode()
    rows = "".join(
        "<tr>"
        + "".join(f"<td>{cell.strip()}</td>" for cell in line.strip("|").split("|"))
        + "</tr>"
        for line in table.splitlines()[2:]
    )
    header = "".join(f"<th>{c.strip()}</th>" for c in table.splitlines()[0].strip("|").split("|"))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Model A/B report</title></head>"
        f"<body><h1>Model A/B report</h1><img src='data:image/png;base64,{image}'/>"
        f"<table border='1'><tr>{header}</tr>{rows}</table></body></html>"
    )


@dg.asset(
    deps=["served_predictions", "transaction_labels"],
    group_name="monitor",
    kinds={"delta", "html"},
)
def model_ab_report(
    context: dg.AssetExecutionContext, config: AbReportConfig, lake: DeltaLake
) -> dg.MaterializeResult:
    """The model versions that answered live traffic (champion, canary), compared on it: per
    version and day the volume, flagged share and mean score from `served_predictions`, and
    where the late labels have arrived precision, recall and PR-AUC; then each version against
    the champion over the window, with two-proportion z-tests (p < 0.01) on flagged share,
    recall and precision and a verdict in words. A plot and the tables in an HTML report in the
    lake's reports area; `canary_sensor` reads the comparisons before it promotes a canary."""
    import polars as pl

    served_days = lake.days(SERVED_PREDICTIONS)
    if not served_days:
        raise dg.Failure(description="served_predictions is empty: the model service has not "
                         "logged any prediction yet")  # fmt: skip
    end = date.fromisoformat(config.end_date) if config.end_date else served_days[-1]
    days = [end - timedelta(days=i) for i in range(config.window_days)][::-1]
    present = [d for d in days if d in set(served_days)]
    if not present:
        raise dg.Failure(
            description=f"served_predictions has no day in {days[0]}..{days[-1]} "
            f"(it has {served_days[0]}..{served_days[-1]})"
        )
    served = pl.from_arrow(lake.read(SERVED_PREDICTIONS, days=present, columns=SERVED_COLUMNS))
    labelled_days = set(lake.days(TRANSACTION_LABELS))
    label_days = [d for d in present if d in labelled_days]
    labels = (
        pl.from_arrow(
            lake.read(TRANSACTION_LABELS, days=label_days, columns=["transaction_id", "isFraud"])
        )
        if label_days
        else pl.DataFrame(schema={"transaction_id": pl.String, "isFraud": pl.Int64})
    )
    per_day, window = version_figures(served, labels)
    champion = champion_of(window)
    comparisons = [
        compare(champion, other) for other in window if other.version != champion.version
    ]
    for comparison in comparisons:
        context.log.info(
            f"v{comparison.other} vs champion v{comparison.champion}: {comparison.verdict}"
        )
    table = markdown(per_day)
    report_uri = lake.write_report(
        _plot_html(per_day, window, table), "model_ab_report", f"{present[0]}_{present[-1]}.html"
    )
    return dg.MaterializeResult(
        metadata={
            "days": f"{present[0]}..{present[-1]}",
            "labelled_days": len(label_days),
            "champion_version": champion.version,
            "versions": dg.MetadataValue.json([f.as_dict() for f in window]),
            "by_version": dg.MetadataValue.md(markdown(window)),
            "by_version_and_day": dg.MetadataValue.md(table),
            "comparisons": dg.MetadataValue.json([c.as_dict() for c in comparisons]),
            "verdicts": dg.MetadataValue.md(
                "\n".join(f"- v{c.other} vs v{c.champion}: {c.verdict}" for c in comparisons)
                or "only one version served in the window"
            ),
            "report": dg.MetadataValue.path(report_uri),
            "report_url": dg.MetadataValue.url(
                report_uri if "://" in report_uri else f"file://{report_uri}"
            ),
            "dagster/row_count": served.height,
        }
    )
