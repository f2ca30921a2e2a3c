"""The online model service over a real lake, MLflow store and trained champion: the same
scores as batch (one by one and in batches), the contract at the door, limits, readiness,
metrics, and reloads that swap the model or keep the old one when the new one cannot load."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
import uvicorn
from fastapi.testclient import TestClient

from mlops_assets.features.definition import FEATURE_COLUMNS
from mlops_assets.monitor.assets import DRIFT_CATEGORICAL, DRIFT_NUMERICAL
from mlops_assets.monitor.drift import compute_drift
from mlops_assets.registry.champion import find_alias, load_scorer
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.serve.app import ServeConfig, create_app, create_app_from_resources
from mlops_assets.serve.model_holder import ModelHolder
from mlops_assets.serve.online_features import REQUEST_FIELDS, load_history, parse_transaction
from mlops_assets.tables import (
    SERVED_PREDICTIONS,
    TRANSACTION_FEATURES,
    VALIDATED_TRANSACTIONS,
)
from mlops_assets_tests.helpers import free_port, wait_for
from mlops_assets_tests.serve_world import DAY, DAYS, MAX_BATCH, NAME, World

pytestmark = pytest.mark.slow


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


def test_reload_without_a_champion_is_unavailable_not_an_error(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A registered name with no champion yet (a first deployment): 503 with the reason, and
    the log says that nothing is serving (not "vNone keeps serving")."""
    app = create_app_from_resources(
        world.resources["lake"],
        world.resources["mlflow_tracking"],
        ServeConfig(model_name="not_registered_yet", load_on_startup=False),
        log_predictions=False,
    )
    with TestClient(app) as client, caplog.at_level(logging.ERROR):
        response = client.post("/reload")
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["message"] == (
            "not_registered_yet@champion could not be loaded and no model is serving"
        )
        assert body["model"]["ok"] is False and body["model"]["error"]
        assert client.post("/predict", json=world.requests[0]).status_code == 503
    assert "nothing is serving" in caplog.text and "vNone" not in caplog.text


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
        assert response.status_code == 409  # the registry's state, not a service fault
        assert response.json()["message"].endswith(f"v{second} keeps serving")
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


# ---------------------------------------------------------------- the prediction log


def _version_scores(world: World, alias: str) -> tuple[str, dict[str, float]]:
    """The version behind ``alias`` and its batch scores of DAY (the features batch wrote)."""
    model = find_alias(world.client, NAME, alias)
    assert model is not None
    features = world.resources["lake"].read(TRANSACTION_FEATURES, days=[DAY]).to_pandas()
    scores = np.asarray(load_scorer(model)(features), dtype=np.float64)
    return model.version, dict(zip(features["transaction_id"], scores, strict=True))


def _other_candidate(world: World) -> str:
    """The other candidate the model factory registered (not a version a test made)."""
    champion = str(world.client.get_model_version_by_alias(NAME, "champion").version)
    versions = world.client.search_model_versions(f"name='{NAME}'")
    return str(min(int(v.version) for v in versions if str(v.version) != champion))


def _logged(lake: DeltaLake) -> pl.DataFrame:
    return pl.from_arrow(lake.read(SERVED_PREDICTIONS))  # type: ignore[return-value]


def test_every_prediction_is_appended_to_the_daily_prediction_log(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log_lake = DeltaLake(root_uri=str(tmp_path / "log"))
    # small micro-batches, and a compaction of the day every second write
    config = {"log_flush_seconds": 0.2, "log_flush_rows": 5, "log_compact_every": 2}
    with caplog.at_level("INFO"), TestClient(world.app(log_lake=log_lake, **config)) as client:
        singles = [client.post("/predict", json=r).json() for r in world.requests[:30]]
        batch = client.post("/predict/batch", json={"transactions": world.requests[30:130]})
        assert batch.status_code == 200
        new = {**world.requests[-1], "transaction_id": None, "timestamp": "2026-01-06T03:00:00Z"}
        fresh = client.post("/predict", json=new).json()
        info = client.get("/model-info").json()["prediction_log"]
        assert info["last_error"] is None
    # leaving the client shut the service down, which wrote what was pending
    logged = _logged(log_lake)
    assert logged.height == 131  # every prediction once, compactions notwithstanding
    assert f"gold/served_predictions: compacted {DAY}" in caplog.text
    assert log_lake.days(SERVED_PREDICTIONS) == [DAY, DAY + timedelta(days=1)]
    rows = {row["transaction_id"]: row for row in logged.iter_rows(named=True)}
    for answer in [*singles, *batch.json()["predictions"], fresh]:
        row = rows[answer["transaction_id"]]
        assert row["fraud_score"] == answer["fraud_score"]
        assert row["is_fraud_predicted"] == answer["is_fraud_predicted"]
    version = singles[0]["model_version"]
    assert logged["model_version"].unique().to_list() == [version]
    assert logged["model_alias"].unique().to_list() == ["champion"]
    assert logged["threshold"].unique().to_list() == [singles[0]["threshold"]]
    endpoints = logged.group_by("endpoint").len().sort("endpoint")
    assert endpoints.rows() == [("predict", 31), ("predict/batch", 100)]
    assert (logged["latency_ms"] > 0).all()
    assert logged["served_at"].is_not_null().all()
    assert logged["shadow_model_version"].is_null().all()  # shadow mode is off by default
    # the logged features are the batch features of those transactions
    batch_features = pl.from_arrow(
        world.resources["lake"].read(TRANSACTION_FEATURES, days=[DAY])
    ).select("transaction_id", *FEATURE_COLUMNS)
    joined = logged.join(batch_features, on="transaction_id", suffix="_batch")
    assert joined.height == 130
    for name in FEATURE_COLUMNS:
        difference = (joined[name] - joined[f"{name}_batch"].cast(pl.Float64)).abs().max()
        assert difference is not None and difference <= 1e-9, name
    # the drift report runs on served traffic as it runs on a batch-scored day
    reference = world.resources["lake"].read(TRANSACTION_FEATURES, days=[DAYS[-2]]).to_pandas()
    summary = compute_drift(
        reference,
        logged.filter(pl.col("txn_date") == DAY).to_pandas(),
        numerical=DRIFT_NUMERICAL,
        categorical=DRIFT_CATEGORICAL,
    )
    assert summary.total_columns == len(DRIFT_NUMERICAL) + len(DRIFT_CATEGORICAL)
    assert summary.current_rows == 130


def test_a_failed_log_write_keeps_its_rows_then_drops_the_oldest_and_says_what_was_lost(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the log's directory should be")
    log_lake = DeltaLake(root_uri=str(blocker / "lake"))  # every write fails
    config = {"log_flush_seconds": 0.1, "log_flush_rows": 5, "log_max_pending_rows": 12}
    caplog.set_level(logging.INFO, logger="mlops_assets.serve.prediction_log")
    with TestClient(world.app(log_lake=log_lake, **config)) as client:

        def log_info() -> dict[str, Any]:
            return dict(client.get("/model-info").json()["prediction_log"])

        for request in world.requests[:8]:
            assert client.post("/predict", json=request).status_code == 200
        wait_for(lambda: "writing 8 prediction(s) failed, kept for the next" in caplog.text)
        info = log_info()
        assert info["pending_rows"] == 8 and info["written_rows"] == 0
        assert "NotADirectory" in info["last_error"]
        # the lake comes back: the next write has every kept row
        blocker.unlink()
        wait_for(lambda: log_info()["written_rows"])
        info = log_info()
        assert (info["written_rows"], info["pending_rows"], info["last_error"]) == (8, 0, None)
        assert _logged(log_lake).height == 8
        metrics = client.get("/metrics").text
        assert 'mlops_serve_prediction_log_rows_total{outcome="written"} 8.0' in metrics

        # the lake goes away for good: beyond 12 waiting rows the oldest are dropped
        shutil.rmtree(tmp_path / "blocker")
        blocker.write_text("gone again")
        for request in world.requests[8:28]:
            assert client.post("/predict", json=request).status_code == 200
        wait_for(lambda: log_info()["dropped_rows"])
        assert "oldest unwritten prediction(s): more than 12 were waiting" in caplog.text
    info_lost = [r.getMessage() for r in caplog.records if "lost" in r.getMessage()]
    assert info_lost and "could not be written at shutdown" in info_lost[-1]


# ---------------------------------------------------------------- shadow mode


def test_shadow_mode_scores_with_the_challenger_off_the_request_path(
    world: World, tmp_path: Path
) -> None:
    world.client.set_registered_model_alias(NAME, "challenger", _other_candidate(world))
    champion_version, champion_scores = _version_scores(world, "champion")
    challenger_version, challenger_scores = _version_scores(world, "challenger")
    delay = 1.0

    def slow_loader(model: Any) -> Any:  # the real challenger, made slow
        scorer = load_scorer(model)

        def score(frame: Any) -> Any:
            time.sleep(delay)
            return scorer(frame)

        return score

    log_lake = DeltaLake(root_uri=str(tmp_path / "log"))
    tracking = world.resources["mlflow_tracking"]
    app = create_app(
        ModelHolder(tracking.client, NAME, "champion"),
        lambda: load_history(world.resources["lake"], 2),
        ServeConfig(model_name=NAME, shadow=True, log_flush_seconds=0.2),
        log_writer=lambda table: log_lake.append(SERVED_PREDICTIONS, table),
        shadow_holder=ModelHolder(tracking.client, NAME, "challenger", loader=slow_loader),
    )
    requests = world.requests[:20]
    with TestClient(app) as client:
        for request in requests:
            response = client.post("/predict", json=request)
            body = response.json()
            assert body["model_version"] == int(champion_version)
            assert body["latency_ms"] < delay * 1000  # the shadow's second is not waited for
        info = client.get("/model-info").json()["shadow"]
        assert (info["alias"], info["version"]) == ("challenger", challenger_version)
    logged = _logged(log_lake)
    assert logged.height == len(requests)
    assert logged["shadow_model_version"].unique().to_list() == [int(challenger_version)]
    for row in logged.iter_rows(named=True):
        expected = challenger_scores[row["transaction_id"]]
        assert row["shadow_fraud_score"] == pytest.approx(expected, abs=1e-6)
        assert row["fraud_score"] == pytest.approx(champion_scores[row["transaction_id"]], abs=1e-6)
    world.client.delete_registered_model_alias(NAME, "challenger")


# ---------------------------------------------------------------- swaps while requests flow


def test_the_model_swaps_while_requests_flow_without_an_error_or_a_mixed_answer(
    world: World, tmp_path: Path
) -> None:
    first = str(world.client.get_model_version_by_alias(NAME, "champion").version)
    second = _other_candidate(world)
    expected = {first: _version_scores(world, "champion")[1]}
    world.client.set_registered_model_alias(NAME, "challenger", second)
    expected[second] = _version_scores(world, "challenger")[1]
    world.client.delete_registered_model_alias(NAME, "challenger")

    app = world.app(refresh_seconds=0.3, log_lake=DeltaLake(root_uri=str(tmp_path / "log")))
    answers: list[tuple[float, float, int, dict[str, Any]]] = []
    stop = threading.Event()

    def client_loop(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                request = rng.choice(world.requests[:500])
                sent = time.monotonic()
                response = http.post("/predict", json=request)
                answers.append((sent, time.monotonic(), response.status_code, response.json()))

    with _running(app) as url:
        clients = [threading.Thread(target=client_loop, args=(i,)) for i in range(4)]
        try:
            for thread in clients:
                thread.start()
            time.sleep(1.0)
            # the alias moves: the service's poll picks it up, no call needed
            moved = time.monotonic()
            world.client.set_registered_model_alias(NAME, "champion", second)
            wait_for(lambda: any(a[3].get("model_version") == int(second) for a in answers))
            switched = min(a[1] for a in answers if a[3].get("model_version") == int(second))
            time.sleep(1.0)
            # and back, through POST /reload: once it has returned, every answer is v-first
            world.client.set_registered_model_alias(NAME, "champion", first)
            with httpx.Client(base_url=url, timeout=60) as http:
                reload = http.post("/reload", params={"history": "false"})
            reloaded = time.monotonic()
            assert reload.status_code == 200 and reload.json()["model"]["version"] == first
            time.sleep(1.0)
        finally:
            stop.set()
            for thread in clients:
                thread.join()
            world.client.set_registered_model_alias(NAME, "champion", first)

    assert len(answers) > 100, len(answers)
    assert [a for a in answers if a[2] != 200] == []
    for _, _, _, body in answers:  # each answer comes wholly from the version it names
        version = str(body["model_version"])
        assert body["fraud_score"] == pytest.approx(
            expected[version][body["transaction_id"]], abs=1e-6
        )
    assert switched - moved < 10.0
    after = [a for a in answers if a[0] > reloaded]
    assert after and {a[3]["model_version"] for a in after} == {int(first)}
    seen = {a[3]["model_version"] for a in answers}
    assert seen == {int(first), int(second)}


@contextmanager
def _running(app: Any) -> Iterator[str]:
    """The app served by a real uvicorn on a loopback port, in a thread."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 60)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


# ---------------------------------------------------------------- the history snapshot


def test_a_newer_validated_table_refreshes_the_history_snapshot(
    world: World, tmp_path: Path
) -> None:
    shutil.copytree(world.resources["lake"].root_uri, tmp_path / "lake")
    lake = DeltaLake(root_uri=str(tmp_path / "lake"))
    app = create_app_from_resources(
        lake,
        world.resources["mlflow_tracking"],
        ServeConfig(model_name=NAME, refresh_seconds=0.2),
        log_predictions=False,
    )
    with TestClient(app) as client:
        before = client.get("/model-info").json()["history"]
        assert before["days"] == [DAYS[-2].isoformat(), DAY.isoformat()]
        # the next day is validated while the service runs
        next_day = DAY + timedelta(days=1)
        day = pl.from_arrow(lake.read(VALIDATED_TRANSACTIONS, days=[DAY]))
        shifted = day.with_columns(
            pl.col("timestamp") + timedelta(days=1),
            pl.col("txn_date") + timedelta(days=1),
            pl.col("transaction_id") + "+1",
        )
        lake.overwrite_day(VALIDATED_TRANSACTIONS, shifted.to_arrow(), next_day)
        after = wait_for(
            lambda: (
                (h := client.get("/model-info").json()["history"])["days"][-1]
                == next_day.isoformat()
                and h
            )
        )
        assert after["days"] == [DAY.isoformat(), next_day.isoformat()]
        assert after["delta_version"] == lake.version(VALIDATED_TRANSACTIONS)
        dropped_day = lake.read(VALIDATED_TRANSACTIONS, days=[DAYS[-2]]).num_rows
        assert after["rows"] == before["rows"] - dropped_day + day.height
        # a transaction of the new day now sees its account's history of that day
        busiest = shifted.group_by("nameOrig").len().sort("len")[-1]["nameOrig"][0]
        last = shifted.filter(pl.col("nameOrig") == busiest).sort("timestamp")[-1]
        request = {k: last[k][0] for k in REQUEST_FIELDS}
        request["timestamp"] = (last["timestamp"][0] + timedelta(minutes=1)).isoformat()
        response = client.post("/predict", json=request)
        assert response.status_code == 200
        features = app.state.service.features.compute([parse_transaction(request)])
        assert features["orig_txn_count_24h"][0] >= 1


# ---------------------------------------------------------------- the command


def test_the_serve_command_runs_the_service_and_writes_the_log_when_stopped(
    world: World, tmp_path: Path
) -> None:
    """``mlops-assets serve`` as the container runs it: ready on the world's champion, and a
    SIGTERM writes the pending micro-batch before the process exits."""
    port = free_port()
    env = os.environ | {
        "MLOPS_HOME": str(world.home),
        "MLOPS_MODEL_NAME": NAME,
        "MLOPS_SERVE_PORT": str(port),
        "MLOPS_SERVE_LOG_FLUSH_SECONDS": "3600",  # only the stop writes
        "MLOPS_LAKE_URI": str(tmp_path / "lake"),  # a lake of its own: no history, a new log
    }
    key_file = world.home / "serve" / "api-keys"
    key_file.unlink(missing_ok=True)  # authentication is on by default, with a generated key
    command = [str(Path(sys.executable).parent / "mlops-assets"), "serve"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 120)
        key = key_file.read_text().split()[-1]
        assert key_file.stat().st_mode & 0o777 == 0o600
        headers = {"Authorization": f"Bearer {key}"}
        refused = httpx.post(f"{url}/predict", json=world.requests[0], timeout=30)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"]
        assert httpx.get(f"{url}/model-info").status_code == 401
        for request in world.requests[:5]:
            response = httpx.post(f"{url}/predict", json=request, headers=headers, timeout=30)
            assert response.status_code == 200, response.text
        info = httpx.get(f"{url}/model-info", headers=headers).json()
        assert info["prediction_log"]["pending_rows"] == 5
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    # uvicorn shuts down cleanly, then re-raises the SIGTERM it caught
    assert process.returncode in (0, -signal.SIGTERM), output.decode()
    assert "Application shutdown complete" in output.decode()
    text = output.decode()
    assert f"Serving {NAME}@champion on http://127.0.0.1:{port}" in text
    assert "generated an API key for this local service" in text and key in text
    assert "prediction log: wrote 5 prediction(s)" in text
    assert _logged(DeltaLake(root_uri=str(tmp_path / "lake"))).height == 5
