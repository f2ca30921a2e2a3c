"""The online model service over a real lake, MLflow store and trained champion: the same
scores as batch (one by one and in batches), the contract at the door, limits, readiness,
metrics, and reloads that swap the model or keep the old one when the new one cannot load."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from mlops_assets.datagen import GeneratorConfig, write_day
from mlops_assets.environment import build_resources
from mlops_assets.serve.app import ServeConfig, create_app_from_resources
from mlops_assets.serve.online_features import REQUEST_FIELDS
from mlops_assets.settings import Settings
from mlops_assets.tables import SCORED_TRANSACTIONS, VALIDATED_TRANSACTIONS
from mlops_assets_tests.pipeline import INGEST, TRAIN, materialize, training_config

pytestmark = pytest.mark.slow

DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(5)]
DAY = DAYS[-1]  # the holdout day, batch scored; the service's history is DAYS[-2:]
NAME = "fraud_detector"
MAX_BATCH = 500


@dataclass
class World:
    home: Path
    resources: dict[str, Any]
    instance: dg.DagsterInstance
    scored: pl.DataFrame  # batch scores of DAY by the champion
    requests: list[dict[str, Any]]  # DAY's validated transactions as request bodies

    @property
    def client(self) -> MlflowClient:
        return self.resources["mlflow_tracking"].client()

    def app(self, **config: Any) -> Any:
        return create_app_from_resources(
            self.resources["lake"],
            self.resources["mlflow_tracking"],
            ServeConfig(model_name=NAME, max_batch_size=MAX_BATCH, **config),
        )

    def score_batch(self) -> pl.DataFrame:
        assert materialize(["scored_transactions"], self.resources, self.instance, DAY).success
        return pl.from_arrow(self.resources["lake"].read(SCORED_TRANSACTIONS, days=[DAY]))


def _requests(lake: Any) -> list[dict[str, Any]]:
    rows = pl.from_arrow(
        lake.read(VALIDATED_TRANSACTIONS, days=[DAY], columns=[*REQUEST_FIELDS, "transaction_id"])
    ).sort("timestamp")
    return [
        {**row, "timestamp": row["timestamp"].isoformat()} for row in rows.iter_rows(named=True)
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("serve")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_HOME", str(home))
    settings = Settings()
    resources = build_resources(settings)
    config = GeneratorConfig(rows_per_day=3_000, seed=42, epoch=settings.paysim_epoch)
    (home / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        for day in DAYS:
            write_day(day, config, settings.resolved_landing_uri)
            assert materialize(INGEST, resources, instance, day).success
        trained = materialize(
            TRAIN, resources, instance, run_config=training_config(4, DAY, trials=1)
        )
        assert trained.success
        state = World(home, resources, instance, pl.DataFrame(), _requests(resources["lake"]))
        state.scored = state.score_batch()
        yield state
    mp.undo()


def _batch_scores(scored: pl.DataFrame) -> dict[str, float]:
    return dict(zip(scored["transaction_id"], scored["fraud_score"], strict=True))


def _assert_parity(client: TestClient, world: World, version: int, one_by_one: int) -> None:
    expected = _batch_scores(world.scored)
    assert len(expected) == len(world.requests)
    # one by one: the day's first transactions (their windows reach into the day before),
    # the busiest accounts' and some spread over the day
    counts = pl.from_dicts(world.requests).group_by("nameOrig").len().sort("len")[-1]
    busy = counts["nameOrig"][0]
    sample = world.requests[:one_by_one] + world.requests[:: len(world.requests) // one_by_one]
    sample += [r for r in world.requests if r["nameOrig"] == busy]
    for request in sample:
        response = client.post("/predict", json=request)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["transaction_id"] == request["transaction_id"]
        assert body["model_version"] == version
        assert body["fraud_score"] == pytest.approx(expected[request["transaction_id"]], abs=1e-6)
        assert body["is_fraud_predicted"] == (body["fraud_score"] >= body["threshold"])
        assert body["latency_ms"] > 0
    # the whole day in batches
    served: dict[str, float] = {}
    flagged = 0
    for start in range(0, len(world.requests), MAX_BATCH):
        chunk = world.requests[start : start + MAX_BATCH]
        response = client.post("/predict/batch", json={"transactions": chunk})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == version and body["count"] == len(chunk)
        assert [p["transaction_id"] for p in body["predictions"]] == [
            r["transaction_id"] for r in chunk
        ]
        served.update({p["transaction_id"]: p["fraud_score"] for p in body["predictions"]})
        flagged += sum(p["is_fraud_predicted"] for p in body["predictions"])
    assert served.keys() == expected.keys()
    worst = max(abs(served[k] - expected[k]) for k in expected)
    assert worst <= 1e-6, worst
    assert flagged == int(world.scored["is_fraud_predicted"].sum())


def test_ready_only_once_a_model_is_loaded(world: World) -> None:
    with TestClient(world.app(load_on_startup=False)) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 503
        assert client.get("/model-info").status_code == 503
        assert client.post("/predict", json=world.requests[0]).status_code == 503
        response = client.post("/reload")
        assert response.status_code == 200, response.text
        assert response.json()["model"]["changed"] is True
        assert response.json()["history"]["days"] == [d.isoformat() for d in DAYS[-2:]]
        ready = client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["model_version"] == str(world.scored["model_version"][0])


def test_online_scores_equal_batch_scores(world: World) -> None:
    version = int(world.scored["model_version"][0])
    with TestClient(world.app()) as client:
        _assert_parity(client, world, version, one_by_one=40)
        info = client.get("/model-info").json()
        assert info["version"] == str(version) and info["alias"] == "champion"
        assert 0 < info["threshold"] < 1
        assert info["lineage"]["lineage.partition_range"] == f"{DAYS[1]}..{DAY}"
        assert "lineage.training_hash" in info["lineage"]
        metrics = client.get("/metrics").text
        assert 'mlops_serve_requests_total{endpoint="/predict",status="200"}' in metrics
        assert 'mlops_serve_requests_total{endpoint="/predict/batch",status="200"}' in metrics
        assert "mlops_serve_request_latency_seconds_bucket" in metrics
        assert "mlops_serve_fraud_score_count" in metrics
        assert (
            f'mlops_serve_model_version{{alias="champion",model_name="{NAME}"}} {float(version)}'
            in metrics
        )


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"amount": -5.0}, "amount", "greater_than(0)"),
        ({"amount": 0}, "amount", "greater_than(0)"),
        ({"type": "WIRE"}, "type", "isin"),
        ({"oldbalanceOrg": -1}, "oldbalanceOrg", "greater_than_or_equal_to(0)"),
        ({"nameDest": "X123"}, "nameDest", "str_matches"),
        ({"nameOrig": 42}, "nameOrig", "not a valid String"),
        ({"timestamp": "yesterday"}, "timestamp", "not a valid Datetime"),
        ({"step": 0}, "step", "greater_than_or_equal_to(1)"),
        ({"amount": "12.5"}, "amount", "not a valid Float64"),
        ({"newbalanceDest": None}, "newbalanceDest", "required"),
    ],
)
def test_a_request_the_contract_rejects_gets_422_naming_field_and_rule(
    world: World, change: dict[str, Any], field: str, rule: str
) -> None:
    with TestClient(world.app()) as client:
        response = client.post("/predict", json={**world.requests[0], **change})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert detail["field"] == field and rule in detail["rule"]
        batch = [world.requests[1], {**world.requests[0], **change}]
        response = client.post("/predict/batch", json={"transactions": batch})
        assert response.status_code == 422
        assert response.json()["detail"]["field"] == f"transactions[1].{field}"


def test_limits_and_malformed_bodies_never_crash(world: World) -> None:
    with TestClient(world.app(max_body_bytes=200_000)) as client:
        over = [world.requests[0]] * (MAX_BATCH + 1)
        response = client.post("/predict/batch", json={"transactions": over[: MAX_BATCH + 1]})
        assert response.status_code == 413  # 501 rows fit in 200 kB
        assert response.json()["detail"]["limit"] == MAX_BATCH
        huge = client.post("/predict/batch", json={"transactions": world.requests[:2000]})
        assert huge.status_code == 413  # the body itself is over the limit
        for body in (b"{", b"[]", b"null", b'"x"', b"1e999", b"[" * 100_000):
            assert client.post("/predict", content=body).status_code == 422
        assert client.post("/predict/batch", json={"transactions": []}).status_code == 422
        assert client.post("/predict/batch", json=[1, 2]).status_code == 422
        duplicate = {"transactions": [world.requests[0], world.requests[0]]}
        assert client.post("/predict/batch", json=duplicate).status_code == 422
        hostile: list[dict[str, Any]] = [
            {"step": 2**70},
            {"step": True},
            {"amount": float("nan")},
            {"amount": float("inf")},
            {"transaction_id": ""},
            {"transaction_id": "x" * 1000},
            {"timestamp": 12345},
            {"timestamp": "2026-13-01"},
        ]
        for change in hostile:
            content = json.dumps({**world.requests[0], **change})
            response = client.post("/predict", content=content)
            assert response.status_code == 422, (change, response.text)
        for change in ({"amount": 1e308}, {"timestamp": "0001-01-01T00:00:00"}, {"extra": [1]}):
            response = client.post("/predict", json={**world.requests[0], **change})
            assert response.status_code == 200, (change, response.text)
        # a new transaction (no id, a day after the history) still scores
        new = {**world.requests[-1], "transaction_id": None}
        new["timestamp"] = "2026-01-06T03:00:00Z"
        assert client.post("/predict", json=new).status_code == 200
        assert client.get("/ready").status_code == 200
        metrics = client.get("/metrics").text
        assert 'endpoint="/predict/batch",status="413"' in metrics
        assert 'endpoint="/predict",status="422"' in metrics


def test_reload_swaps_the_model_and_keeps_the_old_one_when_the_new_one_fails(
    world: World, tmp_path: Path
) -> None:
    client_ = world.client
    champion = client_.get_model_version_by_alias(NAME, "champion")
    versions = client_.search_model_versions(f"name='{NAME}'")
    other = next(v for v in versions if str(v.version) != str(champion.version))
    first, second = str(champion.version), str(other.version)
    with TestClient(world.app()) as client:
        assert client.get("/ready").json()["model_version"] == first
        # the alias moves to the other candidate: a reload serves it
        client_.set_registered_model_alias(NAME, "champion", second)
        response = client.post("/reload")
        assert response.status_code == 200, response.text
        assert response.json()["model"] == {
            **response.json()["model"],
            "ok": True,
            "changed": True,
            "version": second,
            "previous_version": first,
        }
        assert client.get("/model-info").json()["version"] == second
        assert client.post("/reload").json()["model"]["changed"] is False
        # the other family scores like batch too
        world.scored = world.score_batch()
        assert world.scored["model_version"].unique().to_list() == [int(second)]
        _assert_parity(client, world, int(second), one_by_one=5)

        # a version whose artifacts are gone cannot load: the old one keeps serving
        source = tmp_path / "gone"
        shutil.copytree(_local_path(client_.get_model_version_download_uri(NAME, second)), source)
        broken = client_.create_model_version(
            NAME, source=str(source), run_id=other.run_id, tags=dict(other.tags)
        )
        shutil.rmtree(source)
        client_.set_registered_model_alias(NAME, "champion", broken.version)
        response = client.post("/reload")
        assert response.status_code == 500
        model = response.json()["model"]
        assert model["ok"] is False and model["version"] == second and model["error"]
        assert client.get("/ready").status_code == 200
        info = client.get("/model-info").json()
        assert info["version"] == second and info["last_error"] == model["error"]
        assert client.post("/predict", json=world.requests[0]).json()["model_version"] == int(
            second
        )
        assert 'mlops_serve_reloads_total{outcome="failed"} 1.0' in client.get("/metrics").text
        client_.set_registered_model_alias(NAME, "champion", first)


def _local_path(uri: str) -> str:
    return uri.removeprefix("file://")
