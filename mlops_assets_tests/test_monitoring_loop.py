"""The closed loop on small data, through a real Dagster instance, lake, Optuna and MLflow
stores: drift appears, labels arrive late, performance is measured, the retraining sensor asks
for the model factory, a retrained model that fails the gate leaves the old champion in place,
one that passes becomes champion and scores the following days."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl
import pytest

from mlops_assets.datagen import GeneratorConfig, write_day
from mlops_assets.datagen.labels import write_labels
from mlops_assets.definitions import build_definitions
from mlops_assets.monitor.retrain_sensor import retrain_sensor
from mlops_assets.registry.versions import CHAMPION, current_version
from mlops_assets.resources.alerts import AlertSink
from mlops_assets.settings import Settings
from mlops_assets.tables import SCORED_TRANSACTIONS
from mlops_assets_tests.pipeline import INGEST, TRAIN, checks, failure_text, metadata
from mlops_assets_tests.webhook import Receiver

pytestmark = pytest.mark.slow

DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(10)]
DRIFT_START = DAYS[6]
QUICK = {"xgboost_tuning": {"config": {"n_trials": 2}}, "mlp_tuning": {"config": {"n_trials": 1}}}


@dataclass
class Loop:
    settings: Settings
    config: GeneratorConfig
    instance: dg.DagsterInstance
    defs: dg.Definitions
    runs: dict[str, Any] = field(default_factory=dict)

    def materialize(self, keys: list[str], day: date | None = None, **kwargs: Any) -> Any:
        from mlops_assets.definitions import ALL_ASSETS

        return dg.materialize(
            ALL_ASSETS,
            selection=keys,
            resources=self.defs.resources,
            instance=self.instance,
            partition_key=day.isoformat() if day else None,
            **kwargs,
        )

    def land(self, day: date) -> None:
        write_day(day, self.config, self.settings.resolved_landing_uri)
        assert self.materialize(INGEST, day).success

    def score(self, day: date, alerts: AlertSink | None = None) -> dg.ExecuteInJobResult:
        resources = {**self.defs.resources, **({"alerts": alerts} if alerts else {})}
        from mlops_assets.definitions import ALL_ASSETS

        result = dg.materialize(
            ALL_ASSETS,
            selection=["scored_transactions", "drift_report"],
            resources=resources,
            instance=self.instance,
            partition_key=day.isoformat(),
        )
        assert result.success
        return result

    def labels(self, day: date) -> dg.ExecuteInJobResult:
        write_labels(day, self.config, self.settings.resolved_labels_uri)
        result = self.materialize(["transaction_labels", "model_performance"], day)
        assert result.success
        return result

    def champion(self) -> str | None:
        client = self.defs.resources["mlflow_tracking"].client()
        return current_version(client, self.settings.model_name, CHAMPION)

    def sensor(self) -> dg.SensorResult | dg.SkipReason:
        context = dg.build_sensor_context(instance=self.instance, resources=self.defs.resources)
        return retrain_sensor(
            context, self.defs.resources["mlflow_tracking"], self.defs.resources["policy"]
        )

    def retrain(self, request: dg.RunRequest, defs: dg.Definitions | None = None) -> Any:
        """Run what the sensor requested (with fewer trials, to keep the test short)."""
        job = (defs or self.defs).resolve_job_def("training_job")
        return job.execute_in_process(
            instance=self.instance,
            run_config={"ops": QUICK},
            tags=request.tags,
            raise_on_error=False,
        )


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    home = tmp_path_factory.mktemp("loop")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_HOME", str(home))
    mp.setenv("MLOPS_AUTOMATION_ENABLED", "false")
    settings = Settings()
    config = GeneratorConfig(
        rows_per_day=3_000, seed=42, epoch=settings.paysim_epoch, drift_start=DRIFT_START
    )
    (home / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        state = Loop(settings, config, instance, build_definitions())
        for day in DAYS[:6]:
            state.land(day)
        first = state.materialize(
            TRAIN,
            run_config={
                "ops": {
                    "training_set": {"config": {"window_days": 4, "end_date": DAYS[5].isoformat()}},
                    **QUICK,
                }
            },
        )
        assert first.success, failure_text(first)
        state.runs["first"] = first
        yield state
    mp.undo()


def test_clean_days_neither_drift_nor_trigger_retraining(loop: Loop) -> None:
    for day in DAYS[1:6]:
        report = metadata(loop.score(day), "drift_report")
        assert report["dataset_drift"] is False, day
    decision = loop.sensor()
    assert isinstance(decision, dg.SkipReason)
    assert "no persistent drift" in decision.skip_message


def test_performance_waits_for_late_labels_and_is_judged(loop: Loop) -> None:
    waiting = loop.materialize(["model_performance"], DAYS[4], raise_on_error=False)
    assert not waiting.success  # no labels for the day yet: nothing measured
    performance = metadata(loop.labels(DAYS[4]), "model_performance")
    assert performance["labelled_rows"] > 0.95 * 3_000  # quarantined rows have no score
    assert performance["model_version"] == int(loop.champion())
    assert 0 < performance["pr_auc"] <= 1 and 0 <= performance["recall"] <= 1
    assert performance["level"] in ("ok", "warn", "unknown")
    # per segment: every type and amount band of the day, their rows adding up to the whole
    segments = performance["segments_json"]
    types = [s for s in segments if s["dimension"] == "type"]
    bands = [s for s in segments if s["dimension"] == "amount_band"]
    assert {s["segment"] for s in types} == {"PAYMENT", "TRANSFER", "CASH_OUT", "DEBIT", "CASH_IN"}
    assert sum(s["rows"] for s in types) == sum(s["rows"] for s in bands)
    assert sum(s["rows"] for s in types) == performance["labelled_rows"]
    assert sum(s["fraud_rows"] for s in bands) == performance["fraud_rows"]
    assert "| type | TRANSFER |" in performance["segments"]


def test_persistent_drift_requests_the_factory(
    loop: Loop, receiver: Receiver, down_url: str
) -> None:
    # the first drifted day alerts a live webhook; the second a webhook that is down, which
    # is retried, logged, and does not fail the run
    sinks = [AlertSink(webhook_url=receiver.url), AlertSink(webhook_url=down_url, retries=1)]
    for day, sink in zip(DAYS[6:8], sinks, strict=True):
        loop.land(day)
        result = loop.score(day, alerts=sink)
        report = metadata(result, "drift_report")
        assert report["dataset_drift"] is True, day
        assert report["reference_model_version"] == int(loop.champion())
        assert isinstance(report["prediction_drift_score"], float)
        assert not checks(result)["drift_share_within_threshold"].passed
    (alert,) = receiver.delivered
    assert f"Drift on {DAYS[6]}" in alert["text"]
    assert f"drift_report/{DAYS[6]}.html" in alert["text"]  # the report's link
    decision = loop.sensor()
    assert isinstance(decision, dg.SensorResult)
    (request,) = decision.run_requests
    assert request.run_key == f"retrain:v{loop.champion()}:{DAYS[7]}"
    assert f"persisted 2 day(s): {DAYS[6]}" in request.tags["mlops/retrain_reason"]
    loop.runs["request"] = request


def test_a_retrained_model_that_fails_the_gate_leaves_the_champion(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    champion = loop.champion()
    monkeypatch.setenv("MLOPS_GATE_MIN_PR_AUC", "0.999")  # no model can pass
    strict = build_definitions()
    result = loop.retrain(loop.runs["request"], strict)
    assert not result.success
    assert "beats_champion" in failure_text(result)
    assert metadata(result, "challenger_model")["gate_decision"] == "blocked"
    assert loop.champion() == champion
    # the same evidence does not request again (same run key); a new drifted day will
    again = loop.sensor()
    assert again.run_requests[0].run_key == loop.runs["request"].run_key


def _exported(loop: Loop) -> dict[tuple[str, tuple[str, ...]], float]:
    from mlops_assets.monitor.pipeline_reading import read_pipeline, watched_from_definitions

    watched = watched_from_definitions(loop.defs)
    return {(s.name, s.labels): s.value for s in read_pipeline(loop.instance, watched)}


def test_the_exporter_reads_a_blocked_gate_as_a_decision_not_an_error(loop: Loop) -> None:
    exported = _exported(loop)
    # the gate blocked the last training_job run: a decision, not a failure to page about
    assert exported[("mlops_pipeline_latest_run_failed", ("training_job", "gate_blocked"))] == 1
    assert exported[("mlops_pipeline_latest_run_failed", ("training_job", "error"))] == 0
    assert exported[("mlops_pipeline_runs", ("training_job", "FAILURE"))] == 1


def test_a_retrained_model_that_passes_becomes_champion_and_scores_new_days(loop: Loop) -> None:
    old = loop.champion()
    loop.land(DAYS[8])
    loop.score(DAYS[8])
    decision = loop.sensor()
    (request,) = decision.run_requests
    assert request.run_key == f"retrain:v{old}:{DAYS[8]}"
    result = loop.retrain(request)
    assert result.success, failure_text(result)
    training = metadata(result, "training_set")
    assert training["partition_range"].endswith(DAYS[8].isoformat())  # includes the recent days
    new = loop.champion()
    assert new != old
    assert metadata(result, "champion_model")["previous_version"] == int(old)

    loop.land(DAYS[9])
    report = metadata(loop.score(DAYS[9]), "drift_report")
    assert report["reference_model_version"] == int(new)
    scored = pl.from_arrow(loop.defs.resources["lake"].read(SCORED_TRANSACTIONS, days=[DAYS[9]]))
    assert scored["model_version"].unique().to_list() == [int(new)]
    # the evidence against the old champion no longer counts: one report against the new one
    assert isinstance(loop.sensor(), dg.SkipReason)
    late = metadata(loop.labels(DAYS[6]), "model_performance")
    assert late["model_version"] == int(old)  # the day was scored by the old champion


def test_the_exporter_reads_quality_freshness_and_runs_from_the_instance(loop: Loop) -> None:
    exported = _exported(loop)
    drift = {
        labels[0]: value
        for (name, labels), value in exported.items()
        if name == "mlops_drift_share"
    }
    assert DAYS[9].isoformat() in drift and len(drift) >= 4
    for day in drift:  # each scored day's share as its latest report recorded it
        latest = loop.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("drift_report"), asset_partitions=[day]),
            limit=1,
        ).records[0]
        recorded = latest.asset_materialization.metadata["drift_share_by_day"].value
        assert drift[day] == pytest.approx(recorded[day])
    latest_day = max(drift)
    assert exported[("mlops_drift_share_latest", (latest_day,))] == drift[latest_day]
    assert exported[("mlops_drift_share_warn_threshold", ())] == loop.settings.drift_share_threshold
    pr_auc = {labels: v for (name, labels), v in exported.items() if name == "mlops_model_pr_auc"}
    assert {day for day, _version in pr_auc} >= {DAYS[4].isoformat(), DAYS[6].isoformat()}
    assert all(0.0 < value <= 1.0 for value in pr_auc.values())
    coverage = [v for (n, _), v in exported.items() if n == "mlops_model_label_coverage_latest"]
    assert coverage == [pytest.approx(1.0)]  # every scored row of the day got its label
    # freshness: every daily asset with the policy, last materialized moments ago
    for asset in (
        "raw_transactions",
        "validated_transactions",
        "transaction_features",
        "scored_transactions",
    ):
        assert exported[("mlops_asset_freshness_fail_window_seconds", (asset,))] == 36 * 3600
        last = exported[("mlops_asset_last_materialization_timestamp_seconds", (asset,))]
        assert 0 <= time.time() - last < 3600
    latest_partition = exported[
        ("mlops_asset_latest_partition_timestamp_seconds", ("scored_transactions",))
    ]
    assert (
        latest_partition
        == datetime(DAYS[9].year, DAYS[9].month, DAYS[9].day, tzinfo=UTC).timestamp()
    )
    # the passing retraining ran after the blocked one: training_job is healthy again
    assert exported[("mlops_pipeline_latest_run_failed", ("training_job", "gate_blocked"))] == 0
    assert exported[("mlops_pipeline_latest_run_failed", ("training_job", "error"))] == 0
