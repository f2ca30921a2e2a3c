"""Explanations: XGBoost contributions add up to the log-odds, the MLP's integrated gradients
are complete (approximately), the service explains on request (one and batch) with the same
top contributions as the batch ``fraud_explanations`` asset, and a bad ``explain`` is a 422."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import polars as pl
import pytest
from fastapi.testclient import TestClient

from mlops_assets.datagen import GeneratorConfig
from mlops_assets.features.definition import FEATURE_COLUMNS
from mlops_assets.tables import FRAUD_EXPLANATIONS
from mlops_assets.train.explain import (
    explain,
    global_importances,
    mlp_log_odds,
    top_contributions,
)
from mlops_assets.train.families import MlpFamily, XGBoostFamily
from mlops_assets_tests.helpers import feature_days
from mlops_assets_tests.pipeline import materialize
from mlops_assets_tests.serve_world import DAY, World

D = [date(2026, 1, 1) + timedelta(days=i) for i in range(3)]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return feature_days(D, GeneratorConfig(rows_per_day=1_500, seed=3)).to_pandas()


def test_top_contributions_are_sorted_by_magnitude() -> None:
    contribs = np.array([[0.1, -0.5, 0.3], [2.0, 0.0, -3.0]])
    values = np.array([[1, 2, 3], [4, 5, "x"]], dtype=object)
    top = top_contributions(contribs, ("a", "b", "c"), top_k=2, values=values)
    assert [[item["feature"] for item in row] for row in top] == [["b", "c"], ["c", "a"]]
    assert top[1][0] == {"feature": "c", "value": "x", "contribution": -3.0}
    assert len(top_contributions(contribs, ("a", "b", "c"), top_k=10)[0]) == 3


def test_xgboost_contributions_sum_to_the_log_odds(frame: pd.DataFrame) -> None:
    family = XGBoostFamily(threads=1)
    model = family.fit(frame, {"n_estimators": 40, "max_depth": 4})
    explained = explain("xgboost", model, frame)
    matrix = frame[list(FEATURE_COLUMNS)].to_numpy(np.float64)
    margin = model.get_booster().inplace_predict(
        matrix, predict_type="margin", validate_features=False
    )
    total = explained.contributions.sum(axis=1) + explained.bias
    assert np.abs(total - margin).max() < 1e-4
    probability = 1.0 / (1.0 + np.exp(-total))
    assert np.abs(probability - family.scores(model, frame)).max() < 1e-5
    importances = global_importances("xgboost", model, frame)
    assert list(importances) == sorted(importances, key=lambda k: -importances[k])
    assert set(importances) == set(FEATURE_COLUMNS)


def test_saabas_contributions_add_up_too_but_are_not_treeshaps(frame: pd.DataFrame) -> None:
    model = XGBoostFamily(threads=1).fit(frame, {"n_estimators": 40, "max_depth": 4})
    treeshap = explain("xgboost", model, frame)
    saabas = explain("xgboost", model, frame, method="saabas")
    total = saabas.contributions.sum(axis=1) + saabas.bias
    assert np.abs(total - (treeshap.contributions.sum(axis=1) + treeshap.bias)).max() < 1e-4
    assert np.abs(saabas.contributions - treeshap.contributions).max() > 1e-3  # another method
    with pytest.raises(ValueError, match="Unknown explanation method 'lime'"):
        explain("xgboost", model, frame, method="lime")


def test_mlp_integrated_gradients_are_complete(frame: pd.DataFrame) -> None:
    family = MlpFamily(epochs=1)
    model = family.fit(frame, {"batch_size": 512, "epochs": 1})
    rows = frame.sample(300, random_state=1)
    explained = explain("mlp", model, rows)
    assert explained.feature_names[-1] == "type"
    log_odds = mlp_log_odds(model, rows)
    # the log-odds are the model's own: their sigmoid is its probability
    assert np.abs(1 / (1 + np.exp(-log_odds)) - family.scores(model, rows)).max() < 1e-5
    gap = np.abs(explained.contributions.sum(axis=1) + explained.bias - log_odds)
    spread = np.abs(log_odds - explained.bias).mean()
    assert np.median(gap) < 0.02 * max(spread, 1.0), (np.median(gap), spread)
    assert gap.max() < 0.2 * max(spread, 1.0)
    top = explained.top(3)
    assert len(top) == 300 and all(len(row) == 3 for row in top)


# ------------------------------------------------------------- the service and the batch asset


def test_explain_true_matches_the_batch_explanations(world: World) -> None:
    scored = world.score_batch()  # by the current champion (another test may have re-scored)
    world.scored = scored
    assert materialize(["fraud_explanations"], world.resources, world.instance, DAY).success
    table = pl.from_arrow(world.resources["lake"].read(FRAUD_EXPLANATIONS, days=[DAY]))
    flagged = scored.filter(pl.col("is_fraud_predicted"))
    assert flagged.height > 0
    assert table.height == 5 * flagged.height
    assert set(table["transaction_id"]) == set(flagged["transaction_id"])
    version = int(scored["model_version"][0])
    assert table["model_version"].unique().to_list() == [version]
    by_id = {r["transaction_id"]: r for r in world.requests}
    sample = flagged["transaction_id"].to_list()[:3]
    with TestClient(world.app()) as client:
        for transaction_id in sample:
            response = client.post("/predict?explain=true", json=by_id[transaction_id])
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["model_version"] == version
            batch = table.filter(pl.col("transaction_id") == transaction_id).sort("rank")
            served = body["explanation"]
            assert [item["feature"] for item in served] == batch["feature"].to_list()
            assert [item["contribution"] for item in served] == pytest.approx(
                batch["contribution"].to_list(), abs=1e-4
            )
        # in a batch, every prediction carries its own explanation
        chunk = [by_id[t] for t in sample] + world.requests[:7]
        response = client.post("/predict/batch", params={"explain": "true"}, json=chunk)
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert all(len(p["explanation"]) == 5 for p in predictions)
        first = table.filter(pl.col("transaction_id") == sample[0]).sort("rank")
        assert [i["feature"] for i in predictions[0]["explanation"]] == first["feature"].to_list()
        # no explanation unless asked for; a bad value is the caller's error
        assert "explanation" not in client.post("/predict", json=world.requests[0]).json()
        bad = client.post("/predict?explain=maybe", json=world.requests[0])
        assert bad.status_code == 422
        assert bad.json()["detail"]["field"] == "explain"
        off = client.post("/predict?explain=false", json=world.requests[0])
        assert off.status_code == 200 and "explanation" not in off.json()


def test_with_saabas_online_and_batch_explanations_still_agree(world: World) -> None:
    """MLOPS_EXPLAIN_METHOD=saabas reaches both the service and fraud_explanations."""
    from mlops_assets.resources.policy import PipelinePolicy

    scored = world.score_batch()
    current = world.resources["policy"].model_dump()
    policy = PipelinePolicy(**{**current, "explain_method": "saabas"})
    resources = {**world.resources, "policy": policy}
    result = materialize(["fraud_explanations"], resources, world.instance, DAY)
    assert result.success
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["xgboost_explain_method"].value == "saabas"
    table = pl.from_arrow(world.resources["lake"].read(FRAUD_EXPLANATIONS, days=[DAY]))
    transaction_id = scored.filter(pl.col("is_fraud_predicted"))["transaction_id"][0]
    by_id = {r["transaction_id"]: r for r in world.requests}
    with TestClient(world.app(explain_method="saabas")) as client:
        saabas = client.post("/predict?explain=true", json=by_id[transaction_id]).json()
    with TestClient(world.app()) as client:
        treeshap = client.post("/predict?explain=true", json=by_id[transaction_id]).json()
    batch = table.filter(pl.col("transaction_id") == transaction_id).sort("rank")
    served = saabas["explanation"]
    assert [item["feature"] for item in served] == batch["feature"].to_list()
    assert [item["contribution"] for item in served] == pytest.approx(
        batch["contribution"].to_list(), abs=1e-4
    )
    contributions = [item["contribution"] for item in treeshap["explanation"]]
    assert contributions != pytest.approx([item["contribution"] for item in served], abs=1e-6)
    # the default again for the other tests of the shared world
    assert materialize(["fraud_explanations"], world.resources, world.instance, DAY).success


def test_one_pass_explains_its_explaining_requests_and_answers_the_others(world: World) -> None:
    """Requests that queued together are scored in one pass: those that asked get their own
    rows' explanations (computed together), the others none, and every score is the pass's."""
    from mlops_assets.serve.online_features import parse_transaction
    from mlops_assets.serve.scoring import ScoreJob

    def rows(*bodies: dict) -> list[dict]:  # as the endpoints parse them
        return [parse_transaction(body) for body in bodies]

    scored = world.scored
    version = int(scored["model_version"][0])
    by_id = {r["transaction_id"]: r for r in world.requests}
    flagged = scored.filter(pl.col("is_fraud_predicted"))["transaction_id"].to_list()[:2]
    others = [r for r in world.requests if r["transaction_id"] not in flagged][:3]
    jobs = [
        ScoreJob(rows(by_id[flagged[0]]), "predict", explain=True),
        ScoreJob(rows(others[0]), "predict"),
        ScoreJob(rows(by_id[flagged[1]], others[1]), "predict/batch", explain=True),
        ScoreJob(rows(others[2]), "predict"),
    ]
    app = world.app()
    with TestClient(app) as client:
        alone = client.post("/predict?explain=true", json=by_id[flagged[1]]).json()
        app.state.service.worker._score(jobs)  # the pass the scoring thread makes of them
    results = [job.future.result(timeout=5) for job in jobs]
    assert [(r.start, r.end) for r in results] == [(0, 1), (1, 2), (2, 4), (4, 5)]
    assert len({id(r.scored_pass) for r in results}) == 1
    assert results[1].explanations is None and results[3].explanations is None
    assert results[0].explain_error is None and results[2].explain_error is None
    assert [len(e) for e in results[0].explanations + results[2].explanations] == [5, 5, 5]
    # the same transaction gets the same explanation alone or in a shared pass
    assert [i["feature"] for i in results[2].explanations[0]] == [
        i["feature"] for i in alone["explanation"]
    ]
    assert [i["contribution"] for i in results[2].explanations[0]] == pytest.approx(
        [i["contribution"] for i in alone["explanation"]], abs=1e-6
    )
    # and each row's explanation is its own: the two rows of the batch differ
    assert results[2].explanations[0] != results[2].explanations[1]
    assert {p["model_version"] for r in results for p in r.predictions()} == {version}
