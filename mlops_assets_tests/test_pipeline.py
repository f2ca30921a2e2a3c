"""The whole graph on small generated data, through a real Dagster instance, Delta tables and
MLflow store: outcomes an analyst relies on, re-materialization and bad deliveries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable
from mlflow import MlflowClient

from mlops_assets.datagen import GeneratorConfig, write_day
from mlops_assets.environment import build_resources
from mlops_assets.ingest.delivery import REQUIRED_COLUMNS
from mlops_assets.settings import Settings
from mlops_assets.tables import (
    QUARANTINED_TRANSACTIONS,
    RAW_TRANSACTIONS,
    SCORED_TRANSACTIONS,
    TRANSACTION_FEATURES,
    VALIDATED_TRANSACTIONS,
    LakeTable,
)
from mlops_assets_tests.pipeline import (
    INGEST,
    SCORE,
    TRAIN,
    checks,
    failure_text,
    materialize,
    materialize_range,
    metadata,
    training_config,
)

pytestmark = pytest.mark.slow

START = date(2026, 1, 1)
DAYS = [START + timedelta(days=i) for i in range(7)]
DRIFT_DAY = DAYS[-1]
CLEAN_NEW_DAY = DAYS[-2]
ROWS = 3_000
BAD_SHARE = 0.02


class Pipeline:
    """The state of one whole-graph run, shared by the tests of this module."""

    def __init__(self, settings: Settings, instance: dg.DagsterInstance) -> None:
        self.settings = settings
        self.instance = instance
        self.resources = build_resources(settings)
        self.lake = self.resources["lake"]
        self.landing = Path(settings.resolved_landing_uri)
        self.ingest: dict[date, dg.ExecuteInJobResult] = {}
        self.score: dict[date, dg.ExecuteInJobResult] = {}
        self.train: dg.ExecuteInJobResult | None = None

    def table(self, table: LakeTable, day: date | None = None) -> pl.DataFrame:
        return pl.from_arrow(self.lake.read(table, days=[day] if day else None))

    def day_rows(self, table: LakeTable) -> dict[date, int]:
        counts = self.table(table).group_by("txn_date").len()
        return dict(counts.iter_rows())


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    home = tmp_path_factory.mktemp("pipeline")
    settings = Settings(home=str(home))
    config = GeneratorConfig(
        rows_per_day=ROWS,
        seed=42,
        epoch=settings.paysim_epoch,
        drift_start=DRIFT_DAY,
        bad_row_share=BAD_SHARE,
    )
    (home / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        state = Pipeline(settings, instance)
        for day in DAYS:
            write_day(day, config, state.landing)
            state.ingest[day] = materialize(INGEST, state.resources, instance, day)
        # window: DAYS[1..4] (DAYS[0] only warms up the 24 h history); DAYS[4] held out
        state.train = materialize(
            TRAIN, state.resources, instance, run_config=training_config(4, DAYS[4])
        )
        for day in DAYS:
            state.score[day] = materialize(SCORE, state.resources, instance, day)
        yield state


def test_every_day_reconciles_raw_with_validated_and_quarantined(pipeline: Pipeline) -> None:
    raw = pipeline.day_rows(RAW_TRANSACTIONS)
    valid = pipeline.day_rows(VALIDATED_TRANSACTIONS)
    quarantined = pipeline.day_rows(QUARANTINED_TRANSACTIONS)
    for day in DAYS:
        assert raw[day] == ROWS
        assert valid[day] + quarantined[day] == raw[day]
        assert 0 < quarantined[day] < 3 * BAD_SHARE * ROWS
        evaluations = checks(pipeline.ingest[day])
        assert evaluations["reconciles_with_raw"].passed
        assert evaluations["reject_share_within_threshold"].passed


def test_tables_are_plain_delta_tables(pipeline: Pipeline) -> None:
    for table in (
        RAW_TRANSACTIONS,
        VALIDATED_TRANSACTIONS,
        QUARANTINED_TRANSACTIONS,
        TRANSACTION_FEATURES,
        SCORED_TRANSACTIONS,
    ):
        delta = DeltaTable(pipeline.lake.table_uri(table))
        assert delta.metadata().partition_columns == ["txn_date"]
        assert delta.to_pyarrow_table().num_rows > 0
    raw = pipeline.table(RAW_TRANSACTIONS, DAYS[0])
    assert {"_source_file", "_source_row", "_ingested_at"} <= set(raw.columns)
    assert raw["_source_file"].str.ends_with(f"transactions_{DAYS[0]}.csv").all()


def test_quarantine_names_file_and_rule(pipeline: Pipeline) -> None:
    quarantined = pipeline.table(QUARANTINED_TRANSACTIONS, DAYS[2])
    assert quarantined["_source_file"].str.ends_with(f"transactions_{DAYS[2]}.csv").all()
    rules = {rule for row in quarantined["_rules"].to_list() for rule in row}
    for expected in (
        "amount: greater_than(0)",
        "type: isin",
        "amount: not a valid Float64",
        "nameOrig: str_matches",
    ):
        assert any(r.startswith(expected) for r in rules), (expected, rules)
    by_rule = metadata(pipeline.ingest[DAYS[2]], "quarantined_transactions")["rejects_by_rule"]
    assert sum(by_rule.values()) >= quarantined.height


def test_asset_metadata_tells_the_story(pipeline: Pipeline) -> None:
    result = pipeline.ingest[DAYS[1]]
    for key in ("raw_transactions", "validated_transactions", "transaction_features"):
        values = metadata(result, key)
        assert values["dagster/row_count"] > 0
        assert isinstance(values["delta_version"], int)
        assert values["dagster/column_schema"].columns
    assert metadata(result, "validated_transactions")["contract_hash"]


def test_model_clearly_beats_the_baseline_and_is_tracked(pipeline: Pipeline) -> None:
    model = metadata(pipeline.train, "xgboost_candidate")
    assert model["pr_auc"] > 5 * model["holdout_fraud_rate"]
    assert model["roc_auc"] > 0.85
    assert model["mlflow_run"].startswith("http://127.0.0.1:5000/#/experiments/")
    client = MlflowClient(tracking_uri=pipeline.settings.resolved_mlflow_tracking_uri)
    run = client.get_run(model["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["pr_auc"] == pytest.approx(model["pr_auc"])
    for name in ("roc_auc", "precision", "recall", "threshold", "recall_at_precision"):
        assert name in run.data.metrics
    assert run.data.tags["lineage.partition_range"] == f"{DAYS[1]}..{DAYS[4]}"
    assert run.data.tags["dagster.run_id"] == pipeline.train.run_id
    logged = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert run.info.run_id in {m.source_run_id for m in logged}


def test_the_champion_has_the_alias_and_lineage(pipeline: Pipeline) -> None:
    champion = metadata(pipeline.train, "champion_model")
    client = MlflowClient(tracking_uri=pipeline.settings.resolved_mlflow_tracking_uri)
    version = client.get_model_version_by_alias("fraud_detector", "champion")
    assert int(version.version) == champion["model_version"]
    assert version.tags["lineage.delta_version.transaction_features"].isdigit()
    assert float(version.tags["threshold"]) == pytest.approx(champion["threshold"])
    assert version.tags["gate.decision"] == "passed"
    from mlflow.pyfunc import load_model

    signature = load_model(f"models:/fraud_detector/{version.version}").metadata.signature
    # XGBoost takes the 24 numeric features; the MLP also takes the raw `type`
    assert len(signature.inputs.input_names()) in (24, 25)


def test_every_score_row_carries_the_model_version(pipeline: Pipeline) -> None:
    registered = metadata(pipeline.train, "champion_model")
    scores = pipeline.table(SCORED_TRANSACTIONS)
    features = pipeline.table(TRANSACTION_FEATURES)
    assert scores.height == features.height
    assert scores["model_version"].unique().to_list() == [registered["model_version"]]
    assert scores["fraud_score"].is_between(0, 1).all()
    joined = scores.join(features.select("transaction_id", "isFraud"), on="transaction_id")
    assert joined.height == scores.height
    # scores rank fraud above legitimate rows on the days after training
    later = joined.filter(pl.col("txn_date") >= CLEAN_NEW_DAY)
    fraud_mean = later.filter(pl.col("isFraud") == 1)["fraud_score"].mean()
    legit_mean = later.filter(pl.col("isFraud") == 0)["fraud_score"].mean()
    assert fraud_mean > 5 * legit_mean


def test_drift_report_flags_the_drift_day_and_not_a_clean_day(pipeline: Pipeline) -> None:
    drifted = metadata(pipeline.score[DRIFT_DAY], "drift_report")
    clean = metadata(pipeline.score[CLEAN_NEW_DAY], "drift_report")
    assert drifted["dataset_drift"] is True
    assert drifted["drift_share"] >= pipeline.settings.drift_share_threshold
    assert (
        "amount" in drifted["top_drifted_columns"] or "log_amount" in drifted["top_drifted_columns"]
    )
    assert clean["dataset_drift"] is False
    assert clean["drift_share"] < 0.2
    report = Path(drifted["report"])
    assert report.is_file() and report.stat().st_size > 100_000
    assert "<html" in report.read_text()[:2000].lower()
    assert not checks(pipeline.score[DRIFT_DAY])["drift_share_within_threshold"].passed
    assert checks(pipeline.score[CLEAN_NEW_DAY])["drift_share_within_threshold"].passed


def test_a_day_over_the_drift_sample_is_compared_as_a_seeded_sample(pipeline: Pipeline) -> None:
    """A day with more rows than MLOPS_DRIFT_MAX_ROWS: its report compares a seeded sample of
    that many rows (drawn before the day becomes a frame and is scored), says it sampled, still
    flags the drift, and a re-run draws the same sample."""
    settings = pipeline.settings.model_copy(update={"drift_max_rows": 1_000})
    resources = build_resources(settings)
    runs = [
        metadata(materialize(["drift_report"], resources, pipeline.instance, DRIFT_DAY), key)
        for key in ("drift_report", "drift_report")
    ]
    whole = metadata(pipeline.score[DRIFT_DAY], "drift_report")
    assert whole["current_rows"] > 1_000 and whole["sampled"] is False
    assert runs[0]["current_rows"] == 1_000 and runs[0]["sampled"] is True
    assert runs[0]["dataset_drift"] is True
    assert runs[0]["columns"] == runs[1]["columns"]  # the same sample, the same scores


def _snapshot(pipeline: Pipeline, tables: list[LakeTable], days: list[date]) -> dict[Any, Any]:
    snapshot = {}
    for table in tables:
        for day in days:
            frame = pipeline.table(table, day).drop("_ingested_at", strict=False)
            sortable = [c for c, t in frame.schema.items() if not isinstance(t, pl.List)]
            snapshot[(table.name, day)] = frame.sort(sortable)
    return snapshot


def test_rematerializing_a_day_replaces_it(pipeline: Pipeline) -> None:
    tables = [
        RAW_TRANSACTIONS,
        VALIDATED_TRANSACTIONS,
        QUARANTINED_TRANSACTIONS,
        TRANSACTION_FEATURES,
    ]
    day = DAYS[3]
    others = [d for d in DAYS if d != day]
    before_others = _snapshot(pipeline, tables, others)
    before_day = _snapshot(pipeline, tables, [day])
    materialize(INGEST, pipeline.resources, pipeline.instance, day)
    after_day = _snapshot(pipeline, tables, [day])
    for key, frame in before_day.items():
        assert after_day[key].height == frame.height, key  # no duplicated rows
        assert after_day[key].equals(frame), key
    after_others = _snapshot(pipeline, tables, others)
    for key, frame in before_others.items():
        assert after_others[key].equals(frame), key


def _intact(pipeline: Pipeline) -> dict[date, int]:
    return {d: n for d, n in pipeline.day_rows(RAW_TRANSACTIONS).items() if d in DAYS}


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("malformed", b'step,type,amount\n1,PAYMENT,"12\n3,4\n5,6,7,8,9\n', "is malformed"),
        ("empty", b"", "is empty"),
        ("missing_column", None, "missing required column(s) amount"),
        ("header_only", ",".join(REQUIRED_COLUMNS).encode() + b"\n", "header but no rows"),
    ],
)
def test_bad_files_fail_clearly_and_leave_earlier_days_intact(
    pipeline: Pipeline, name: str, content: bytes | None, expected: str
) -> None:
    day = DAYS[-1] + timedelta(
        days=10 + ["malformed", "empty", "missing_column", "header_only"].index(name)
    )
    path = pipeline.landing / f"transactions_{day}.csv"
    if content is None:
        generated = write_day(day, GeneratorConfig(rows_per_day=50), pipeline.landing)
        pl.read_csv(generated).drop("amount").write_csv(path)
    else:
        path.write_bytes(content)
    before = _intact(pipeline)
    raw_version = pipeline.lake.version(RAW_TRANSACTIONS)
    result = materialize(INGEST, pipeline.resources, pipeline.instance, day, raise_on_error=False)
    assert not result.success
    text = failure_text(result)
    assert expected in text
    assert str(path) in text
    assert pipeline.lake.version(RAW_TRANSACTIONS) == raw_version
    assert _intact(pipeline) == before
    assert day not in pipeline.lake.days(RAW_TRANSACTIONS)


def test_mistyped_values_are_quarantined_with_file_and_rule(pipeline: Pipeline) -> None:
    day = DAYS[-1] + timedelta(days=20)
    generated = write_day(day, GeneratorConfig(rows_per_day=100), pipeline.landing)
    frame = pl.read_csv(generated, infer_schema=False)
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) < 30)
        .then(pl.lit("twelve"))
        .otherwise(pl.col("amount"))
        .alias("amount")
    )
    frame.write_csv(generated)
    before = _intact(pipeline)
    result = materialize(INGEST, pipeline.resources, pipeline.instance, day, raise_on_error=False)
    quarantined = pipeline.table(QUARANTINED_TRANSACTIONS, day)
    assert quarantined.height == 30
    assert quarantined["amount"].unique().to_list() == ["twelve"]
    assert quarantined["_source_file"].unique().to_list() == [str(generated)]
    assert all("amount: not a valid Float64" in rules for rules in quarantined["_rules"])
    evaluation = checks(result)["reject_share_within_threshold"]
    assert not evaluation.passed  # 30% is past the 5% threshold
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    # the blocking check holds the day back: no silver rows, no features, a clear failure
    assert not result.success
    assert "Reject share above MLOPS_MAX_REJECT_SHARE=5.0%" in failure_text(result)
    assert day not in pipeline.lake.days(VALIDATED_TRANSACTIONS)
    assert day not in pipeline.lake.days(TRANSACTION_FEATURES)
    assert _intact(pipeline) == before


def test_a_day_without_files_says_what_it_expected(pipeline: Pipeline) -> None:
    day = DAYS[-1] + timedelta(days=30)
    result = materialize(
        ["raw_transactions"], pipeline.resources, pipeline.instance, day, raise_on_error=False
    )
    assert not result.success
    assert f"No landing file for {day}" in failure_text(result)


def test_a_range_scores_and_checks_each_day_and_skips_a_day_without_features(
    pipeline: Pipeline,
) -> None:
    """A backfill through the daemon also asks for the day after the range (downstream of the
    features' look-back): scores and drift skip it; each day's drift check is its own."""
    after = DRIFT_DAY + timedelta(days=1)  # nothing landed: no features
    assert after not in pipeline.lake.days(TRANSACTION_FEATURES)
    result = materialize_range(SCORE, pipeline.resources, pipeline.instance, CLEAN_NEW_DAY, after)
    assert result.success
    drift = {e.partition: e for e in result.get_asset_check_evaluations()}
    assert set(drift) == {CLEAN_NEW_DAY.isoformat(), DRIFT_DAY.isoformat()}
    assert drift[CLEAN_NEW_DAY.isoformat()].passed
    assert not drift[DRIFT_DAY.isoformat()].passed
    assert drift[DRIFT_DAY.isoformat()].metadata["drifted"].value is True
    scored = pipeline.day_rows(SCORED_TRANSACTIONS)
    features = pipeline.day_rows(TRANSACTION_FEATURES)
    for day in (CLEAN_NEW_DAY, DRIFT_DAY):
        assert scored[day] == features[day] > 0
    assert after not in scored
    for key in SCORE:
        recorded = pipeline.instance.get_materialized_partitions(dg.AssetKey(key))
        assert {CLEAN_NEW_DAY.isoformat(), DRIFT_DAY.isoformat(), after.isoformat()} <= recorded
