"""The monitoring rules on their own: late label files, day performance, the retrain decision."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from mlops_assets.datagen import GeneratorConfig
from mlops_assets.datagen.labels import generate_labels
from mlops_assets.ingest.delivery import DeliveryError
from mlops_assets.ingest.labels import label_files_for, parse_labels
from mlops_assets.monitor.performance import PerformanceRule, day_performance, performance_level
from mlops_assets.monitor.retrain import DayDrift, DayQuality, decide_retrain
from mlops_assets.resources.landing import LandingFile

D = [date(2026, 1, 1) + timedelta(days=i) for i in range(8)]


def file(name: str) -> LandingFile:
    return LandingFile(uri=f"/labels/{name}", name=name, size=1, mtime_ns=0)


def test_label_files_are_matched_to_their_transaction_day() -> None:
    files = [file("labels_2026-01-02.csv"), file("labels_2026-01-03.csv"), file("x_2026-01-02.csv")]
    assert [f.name for f in label_files_for(D[1], files)] == ["labels_2026-01-02.csv"]


def test_generated_labels_name_the_delivered_rows_and_parse() -> None:
    labels = generate_labels(D[2], GeneratorConfig(rows_per_day=500, seed=1, bad_row_share=0.02))
    assert labels.height == 500
    assert labels["transaction_id"][0] == "transactions_2026-01-03:1"
    parsed = parse_labels(file("labels_2026-01-03.csv"), labels.write_csv().encode())
    assert parsed["isFraud"].to_list() == labels["isFraud"].to_list()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"transaction_id\nt:1\n", "missing column(s) isFraud"),
        (b"transaction_id,isFraud\nt:1,0\nt:2,7\n", "isFraud other than 0/1 (first at line(s) 3)"),
        (b"transaction_id,isFraud\nt:1,0\nt:1,1\n", "label the same transactions twice"),
    ],
)
def test_bad_label_files_are_refused_naming_file_and_line(content: bytes, message: str) -> None:
    with pytest.raises(DeliveryError, match=r"labels_2026-01-03\.csv") as error:
        parse_labels(file("labels_2026-01-03.csv"), content)
    assert message in str(error.value)


def test_day_performance_and_its_level() -> None:
    labels = np.array([1] * 10 + [0] * 90)
    scores = np.concatenate([np.linspace(0.6, 0.9, 10), np.linspace(0.0, 0.7, 90)])
    day = day_performance(labels, scores, (scores >= 0.5).astype(int), scored_rows=120)
    assert day.label_coverage == pytest.approx(100 / 120)
    assert day.recall == 1.0 and 0 < day.precision < 1
    rule = PerformanceRule(warn_drop=0.2, error_drop=0.4)
    assert performance_level(day, day.pr_auc, rule)[0] == "ok"
    assert performance_level(day, day.pr_auc / 0.7, rule)[0] == "warn"  # a 30% drop
    level, drop, text = performance_level(day, day.pr_auc / 0.5, rule)
    assert level == "error" and drop == pytest.approx(0.5) and "+50.0% drop" in text
    few = day_performance(labels[8:], scores[8:], (scores[8:] >= 0.5).astype(int), 92)
    assert performance_level(few, 0.9, rule)[0] == "unknown"  # 2 frauds: not judged
    with pytest.raises(ValueError, match="warn_drop"):
        PerformanceRule(warn_drop=0.5, error_drop=0.3)


def drift(day: int, drifted: bool, version: str = "3") -> DayDrift:
    return DayDrift(D[day], drifted, 0.7 if drifted else 0.1, version)


def test_retraining_needs_drift_on_consecutive_days_against_the_champion() -> None:
    assert not decide_retrain("3", [drift(1, False), drift(2, True)], [], 2).retrain
    gap = decide_retrain("3", [drift(2, True), drift(4, True)], [], 2)  # day 3 not reported
    assert not gap.retrain
    yes = decide_retrain("3", [drift(1, False), drift(2, True), drift(3, True)], [], 2)
    assert yes.retrain and yes.evidence_day == D[3]
    assert yes.run_key("3") == f"retrain:v3:{D[3]}"
    assert "persisted 2 day(s)" in yes.reason
    # drift measured against an earlier champion does not count for the new one
    old = [drift(2, True, "2"), drift(3, True, "2"), drift(4, False)]
    assert not decide_retrain("3", old, [], 2).retrain
    assert not decide_retrain(None, [drift(2, True), drift(3, True)], [], 2).retrain


def test_retraining_on_failing_performance_of_the_champion() -> None:
    bad = [DayQuality(D[1], "ok", 0.8, "3"), DayQuality(D[2], "error", 0.2, "3")]
    decision = decide_retrain("3", [], bad, 2)
    assert decision.retrain and decision.evidence_day == D[2]
    assert "fell to 0.200" in decision.reason
    recovered = [*bad, DayQuality(D[3], "ok", 0.8, "3")]
    assert not decide_retrain("3", [], recovered, 2).retrain
    assert not decide_retrain("4", [], bad, 2).retrain  # judged another model


def test_the_label_sensor_requests_a_new_label_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    import dagster as dg

    from mlops_assets.datagen.labels import write_labels
    from mlops_assets.definitions import ALL_ASSETS, build_definitions

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLOPS_LANDING_SETTLE_SECONDS", "0")
    defs = build_definitions()
    sensor = next(s for s in defs.sensors if s.name == "label_sensor")
    labels_dir = tmp_path / "home" / "labels"
    written = write_labels(D[2], GeneratorConfig(rows_per_day=200, seed=1), labels_dir)
    (labels_dir / "notes.csv").write_text("not a label file\n")
    os.utime(written, (0, 0))  # long settled
    instance = dg.DagsterInstance.ephemeral()

    def evaluate(cursor: str | None = None) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=instance, resources=defs.resources, cursor=cursor
        )
        return sensor(context)

    first = evaluate()
    (request,) = first.run_requests
    assert request.partition_key == D[2].isoformat()
    assert request.asset_selection == [dg.AssetKey("transaction_labels")]
    assert evaluate(first.cursor).run_requests == []  # the cursor remembers the file
    loaded = dg.materialize(
        ALL_ASSETS,
        selection=["transaction_labels"],
        resources=defs.resources,
        instance=instance,
        partition_key=D[2].isoformat(),
    )
    assert loaded.success
    assert evaluate().run_requests == []  # without a cursor: already loaded, same content
