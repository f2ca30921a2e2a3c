"""A day streamed through a real broker equals the same day delivered as a file, in every
table the pipeline makes of it (validated rows, features, scores), and the streaming scorer
decides every transaction of it as batch scoring does, to 1e-6: across a restart (the history
replayed from the topic) and across a champion moved while it runs. Real Kafka (KRaft), a
real schema registry, real Delta lakes, a real MLflow store, real Dagster instances."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from mlflow import MlflowClient

from mlops_assets.datagen import GeneratorConfig, write_day
from mlops_assets.environment import build_resources
from mlops_assets.features.rolling_history import RollingHistory
from mlops_assets.ingest.stream_sensor import stream_sensor
from mlops_assets.registry.champion import find_alias, load_scorer
from mlops_assets.resources.landing import LandingZone
from mlops_assets.serve.model_holder import ModelHolder
from mlops_assets.serve.prediction_log import PredictionLog
from mlops_assets.serve.refresh import PeriodicRefresh
from mlops_assets.serve.stream_scorer import StreamScorer, load_history_table
from mlops_assets.settings import Settings
from mlops_assets.stream.bronze_writer import BronzeWriter
from mlops_assets.stream.codec import subject_for
from mlops_assets.stream.dead_letters import DeadLetterProducer
from mlops_assets.stream.ingest import BronzeIngestion
from mlops_assets.stream.producer import produce_records, typed_records
from mlops_assets.stream.setup import decision_codec, transaction_codec
from mlops_assets.tables import (
    QUARANTINED_TRANSACTIONS,
    SCORED_TRANSACTIONS,
    SERVED_PREDICTIONS,
    TRANSACTION_FEATURES,
    VALIDATED_TRANSACTIONS,
)
from mlops_assets_tests.kafka_broker import StreamWorld, stream_world
from mlops_assets_tests.pipeline import INGEST, TRAIN, materialize, training_config

pytestmark = pytest.mark.slow

EPOCH = date(2026, 1, 1)
DAYS = [EPOCH + timedelta(days=i) for i in range(4)]  # delivered as files; the last held out
DAY = EPOCH + timedelta(days=4)  # streamed
NAME = "fraud_detector"
CONFIG = GeneratorConfig(rows_per_day=2_000, seed=21, epoch=EPOCH, bad_row_share=0.01)
#: when and where a row was made, not what it holds
LINEAGE = (
    "scored_at",
    "_source_file",
    "_source_row",
    "_source_topic",
    "_source_partition",
    "_source_offset",
    "_ingested_at",
)


@dataclass
class Home:
    path: Path
    resources: dict[str, Any]
    instance: dg.DagsterInstance

    def materialize(self, keys: list[str], day: date | None = None, **kwargs: Any) -> Any:
        result = materialize(keys, self.resources, self.instance, day, **kwargs)
        assert result.success
        return result

    def read(self, table: Any, day: date = DAY) -> pl.DataFrame:
        return pl.from_arrow(self.resources["lake"].read(table, days=[day]))  # type: ignore[return-value]


@dataclass
class World:
    files: Home  # every day delivered as a file
    streamed: Home  # the day before as a file, the day itself streamed
    stream: StreamWorld
    records: list[tuple[int, dict[str, Any] | None, str | None]]  # DAY's rows, typed

    def produce(self, records: list[Any]) -> int:
        codec = transaction_codec(self.stream.registry)
        writer = self.stream.setup.transaction_schema
        report = produce_records(
            self.stream.kafka.producer(**{"linger.ms": 5}),
            self.stream.kafka.transactions_topic,
            codec.encoder(writer),
            iter(records),
            writer.schema_id,
        )
        assert report.failed == 0
        return report.sent

    def scorer(
        self,
        history_days: list[date],
        log: PredictionLog | None = None,
        group: str | None = None,
        max_pass_rows: int = 5_000,
    ) -> StreamScorer:
        kafka, registry = self.stream.kafka, self.stream.registry
        lake = self.streamed.resources["lake"]
        history = RollingHistory()
        history.append(
            lake.read(
                VALIDATED_TRANSACTIONS,
                days=history_days,
                columns=list(load_history_table(lake, 1).schema.names),
            )
        )
        decisions = decision_codec(registry)
        return StreamScorer(
            consumer_factory=lambda: kafka.consumer(group or kafka.scorer_group),
            codec=transaction_codec(registry),
            decisions=decisions.register(subject_for(kafka.decisions_topic)),
            decision_codec=decisions,
            producer=kafka.producer(**{"linger.ms": 1}),
            holder=ModelHolder(self.streamed.resources["mlflow_tracking"].client, NAME, "champion"),
            topic=kafka.transactions_topic,
            decisions_topic=kafka.decisions_topic,
            first_day=EPOCH,
            history=history,
            prediction_log=log,
            max_pass_rows=max_pass_rows,
        )

    def decisions(self) -> pl.DataFrame:
        codec = decision_codec(self.stream.registry)
        rows = [
            codec.decode(m.value())[1]
            for m in self.stream.read_all(self.stream.kafka.decisions_topic)
        ]
        return pl.DataFrame(rows)


def _home(path: Path, mp: pytest.MonkeyPatch, mlflow_home: Path | None = None) -> dict[str, Any]:
    mp.setenv("MLOPS_HOME", str(path))
    if mlflow_home is not None:  # one MLflow store for both lakes: the same champion
        mp.setenv("MLOPS_MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_home / 'mlflow' / 'mlflow.db'}")
        mp.setenv("MLOPS_MLFLOW_ARTIFACT_URI", str(mlflow_home / "mlflow" / "artifacts"))
    return build_resources(Settings())


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, kafka_broker: Any, schema_registry_server: Any
) -> Iterator[World]:
    mp = pytest.MonkeyPatch()
    files_path, streamed_path = tmp_path_factory.mktemp("files"), tmp_path_factory.mktemp("stream")
    files_resources = _home(files_path, mp)
    streamed_resources = _home(streamed_path, mp, mlflow_home=files_path)
    stream = stream_world(kafka_broker, schema_registry_server, "pipeline")
    streamed_resources |= {"kafka": stream.kafka, "schema_registry": stream.registry}
    for path in (files_path, streamed_path):
        (path / "dagster").mkdir()
    with (
        dg.instance_for_test(temp_dir=str(files_path / "dagster")) as files_instance,
        dg.instance_for_test(temp_dir=str(streamed_path / "dagster")) as streamed_instance,
    ):
        files = Home(files_path, files_resources, files_instance)
        streamed = Home(streamed_path, streamed_resources, streamed_instance)
        landing = Path(files_resources["landing"].uri)
        for day in [*DAYS, DAY]:
            write_day(day, CONFIG, str(landing))
        for day in DAYS:
            files.materialize(INGEST, day)
        files.materialize(TRAIN, run_config=training_config(3, DAYS[-1], trials=1))
        files.materialize([*INGEST, "scored_transactions"], DAY)
        # the streamed home: the day before as a file (the 24-hour look-back), the day streamed
        write_day(DAYS[-1], CONFIG, streamed_resources["landing"].uri)
        streamed.materialize(INGEST, DAYS[-1])
        zone = LandingZone(uri=str(landing))
        file = next(f for f in zone.list_files() if DAY.isoformat() in f.name)
        writer = stream.setup.transaction_schema
        records = list(typed_records(file, zone.read_bytes(file), EPOCH, list(writer.fields)))
        yield World(files, streamed, stream, records)
    mp.undo()


def _sent(records: list[Any]) -> list[dict[str, Any]]:
    return [record for _row, record, _why in records if record is not None]


def test_a_streamed_day_equals_the_same_day_delivered_as_a_file(world: World) -> None:
    half = len(world.records) // 2
    first = _sent(world.records[:half])
    # the streaming scorer decides the first half as it arrives
    scorer = world.scorer([DAYS[-1]])
    world.produce(world.records[:half])
    scorer.run(stop_when_caught_up=True, idle_seconds=0.5)
    assert scorer.decided + scorer.rejected == len(first)
    assert scorer.aligner.forced == 0  # never decided before every partition passed
    world.produce(world.records[half:])

    # the bronze ingestion, then the stream sensor requests the day, as in production
    kafka = world.stream.kafka
    lake = world.streamed.resources["lake"]
    stats = BronzeIngestion(
        lambda: kafka.consumer(kafka.ingest_group),
        transaction_codec(world.stream.registry),
        BronzeWriter(lake, group=kafka.ingest_group),
        DeadLetterProducer(kafka.producer(), kafka.dead_letter_topic),
        kafka.transactions_topic,
        EPOCH,
        batch_rows=1_000,
        batch_seconds=0.2,
    ).run(stop_when_caught_up=True, idle_seconds=0.5)
    sent = len(_sent(world.records))
    assert stats.messages == sent and stats.dead_letters.get("contract", 0) > 0
    policy = world.streamed.resources["policy"].model_copy(update={"stream_settle_seconds": 0})
    result = _tick(world, policy)
    assert [r.partition_key for r in result.run_requests] == [DAY.isoformat()]
    assert result.run_requests[0].run_key == f"stream:{DAY}:{sent}"
    observed = result.asset_events[0].metadata
    assert observed["lag_messages"].value == 0
    assert observed["messages_since_last_observation"].value == sent
    assert observed["streamed_rows_by_day"].value == {DAY.isoformat(): sent}
    world.streamed.materialize([*INGEST, "scored_transactions"], DAY)
    again = _tick(world, policy, cursor=result.cursor)
    assert not again.run_requests  # loaded: nothing more to request until rows change

    # validated rows, features and scores equal the file delivery's
    for table, keys in (
        (VALIDATED_TRANSACTIONS, ["transaction_id"]),
        (TRANSACTION_FEATURES, ["transaction_id"]),
        (SCORED_TRANSACTIONS, ["transaction_id"]),
    ):
        by_file = world.files.read(table).drop(
            [c for c in LINEAGE if c in world.files.read(table).columns]
        )
        by_stream = world.streamed.read(table)
        by_stream = by_stream.drop([c for c in LINEAGE if c in by_stream.columns])
        by_stream = by_stream.select(by_file.columns).sort(keys)
        assert by_stream.height == by_file.height > 1_900, table.name
        assert by_stream.equals(by_file.sort(keys)), table.name

    # the scorer restarted with the history of the day before only: it replays the first half
    # from the topic into its history and decides the second half as batch scored it
    prediction_log = PredictionLog(lake.appender(SERVED_PREDICTIONS), flush_seconds=0.5)
    prediction_log.start()
    restarted = world.scorer([DAYS[-1]], log=prediction_log)
    restarted.run(stop_when_caught_up=True, idle_seconds=0.5)
    prediction_log.stop()
    assert restarted.aligner.forced == 0
    assert restarted.replayed >= len(first) - 30  # the first half (less its rejects)
    decisions = world.decisions()
    assert decisions.height == sent  # every transaction decided once (no crash here)
    batch = world.files.read(SCORED_TRANSACTIONS).select(
        "transaction_id", "fraud_score", "is_fraud_predicted", "model_version"
    )
    scored = decisions.filter(pl.col("decision") != "rejected").join(batch, on="transaction_id")
    assert scored.height == batch.height
    assert (scored["fraud_score"] - scored["fraud_score_right"]).abs().max() < 1e-6
    assert (scored["decision"] == "flagged").to_list() == scored["is_fraud_predicted"].to_list()
    assert (scored["model_version"] == scored["model_version_right"]).all()
    rejected = decisions.filter(pl.col("decision") == "rejected")
    quarantined = world.streamed.read(QUARANTINED_TRANSACTIONS)
    assert rejected.height == quarantined.height > 0
    assert rejected["reason"].null_count() == 0
    logged = world.streamed.read(SERVED_PREDICTIONS)
    assert logged.height == restarted.decided and set(logged["endpoint"]) == {"stream"}
    joined = logged.join(batch, on="transaction_id")
    assert joined.height == logged.height
    assert (joined["fraud_score"] - joined["fraud_score_right"]).abs().max() < 1e-6

    # a new scorer whose history already holds the whole day (validated meanwhile), reading
    # the day as a backlog in many small passes: the same decisions (the history is pruned by
    # what is still to score, not by its newest row)
    again_at = datetime.now(UTC)
    rescorer = world.scorer([DAYS[-1], DAY], group="rescore", max_pass_rows=150)
    rescorer.run(stop_when_caught_up=True, idle_seconds=0.5)
    assert rescorer.aligner.forced == 0 and rescorer.decided == batch.height
    redecided = world.decisions().filter(
        (pl.col("scored_at") > again_at) & (pl.col("decision") != "rejected")
    )
    rejoined = redecided.join(batch, on="transaction_id")
    assert rejoined.height == batch.height
    assert (rejoined["fraud_score"] - rejoined["fraud_score_right"]).abs().max() < 1e-6


def _tick(world: World, policy: Any, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=world.streamed.instance, cursor=cursor)
    result = stream_sensor(
        context,
        lake=world.streamed.resources["lake"],
        kafka=world.stream.kafka,
        policy=policy,
    )
    assert isinstance(result, dg.SensorResult), result
    return result


def test_the_scorer_takes_a_new_champion_without_a_restart(world: World) -> None:
    client: MlflowClient = world.files.resources["mlflow_tracking"].client()
    champion = find_alias(client, NAME, "champion")
    assert champion is not None
    other = str(
        next(
            v.version
            for v in client.search_model_versions(f"name='{NAME}'")
            if str(v.version) != champion.version
        )
    )
    scorer = world.scorer([DAYS[-1], DAY])
    refresher = PeriodicRefresh(scorer.holder.reload, 0.2)
    thread = threading.Thread(target=scorer.run, daemon=True)
    before = world.decisions().height
    try:
        thread.start()
        deadline = time.monotonic() + 60
        while scorer.holder.current is None and time.monotonic() < deadline:
            time.sleep(0.1)
        refresher.start()
        client.set_registered_model_alias(NAME, "champion", other)
        while scorer.holder.current.version != other and time.monotonic() < deadline:
            time.sleep(0.1)
        assert scorer.holder.current.version == other
        swapped_at = datetime.now(UTC)
        again = world.records[100:160]  # the same transactions sent again
        world.produce(again)
        while world.decisions().height < before + len(_sent(again)) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        scorer.stop()
        thread.join(30)
        refresher.stop()
        client.set_registered_model_alias(NAME, "champion", champion.version)
    latest = world.decisions().filter(pl.col("scored_at") > swapped_at)
    assert latest.height == len(_sent(again))  # each transaction sent again decided again
    latest = latest.filter(pl.col("decision") != "rejected")
    assert set(latest["model_version"].to_list()) == {int(other)}
    features = world.files.read(TRANSACTION_FEATURES).to_pandas().set_index("transaction_id")
    scorer_fn = load_scorer(_aliased(client, other))
    expected = scorer_fn(features.loc[latest["transaction_id"].to_list()].reset_index())
    assert abs(latest["fraud_score"].to_numpy() - expected).max() < 1e-6


def _aliased(client: MlflowClient, version: str) -> Any:
    """The registered version as the loader takes it (alias set to it for the look-up)."""
    client.set_registered_model_alias(NAME, "lookup", version)
    try:
        found = find_alias(client, NAME, "lookup")
    finally:
        client.delete_registered_model_alias(NAME, "lookup")
    assert found is not None
    return found
