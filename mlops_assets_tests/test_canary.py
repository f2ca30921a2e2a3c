"""Canary releases: sticky routing, the SLO guard, the registry record, and the model service
rolling bad canaries back (slow, erroring, flagging everything) while the champion keeps serving
every request, and promoting one that held its SLOs through the gate."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import polars as pl
import pytest
from fastapi.testclient import TestClient
from mlflow.exceptions import MlflowException

from mlops_assets.registry.canary import CANARY, record_rollback, start_canary
from mlops_assets.registry.canary_assets import build_canary_sensor
from mlops_assets.registry.champion import AliasedModel, load_scorer
from mlops_assets.registry.versions import CHAMPION, RegistryError
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.serve.app import ServeConfig, create_app
from mlops_assets.serve.canary import CanaryGuard, CanarySlo, account_buckets, routed_to_canary
from mlops_assets.serve.canary_control import RegistryRecorder
from mlops_assets.serve.model_holder import ModelHolder
from mlops_assets.serve.online_features import load_history
from mlops_assets.tables import SERVED_PREDICTIONS, TRANSACTION_LABELS, VALIDATED_TRANSACTIONS
from mlops_assets_tests.helpers import wait_for
from mlops_assets_tests.pipeline import materialize, metadata
from mlops_assets_tests.serve_world import DAY, MAX_BATCH, NAME, World

# ---------------------------------------------------------------- routing and the guard (pure)


def _accounts(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([f"C{number}" for number in rng.integers(10**8, 10**9, n)])


def test_routing_is_sticky_per_account_and_grows_with_the_share() -> None:
    accounts = _accounts(20_000)
    five, twenty = routed_to_canary(accounts, 0.05), routed_to_canary(accounts, 0.20)
    assert abs(five.mean() - 0.05) < 0.01 and abs(twenty.mean() - 0.20) < 0.015
    assert not (five & ~twenty).any()  # raising the share only adds accounts
    # the same account is routed the same way wherever it appears, in any process
    again = routed_to_canary(np.concatenate([accounts[::-1], accounts[:10]]), 0.05)
    assert (again[: len(accounts)] == five[::-1]).all() and (again[-10:] == five[:10]).all()
    # pinned: every replica, restart and release must put an account in the same bucket
    assert account_buckets(["C1231006815", "C1666544295"]).tolist() == [2567, 4759]
    assert not routed_to_canary(accounts, 0.0).any() and routed_to_canary(accounts, 1.0).all()


SMALL = CanarySlo(min_rows=100, min_passes=10, hold_seconds=30, hold_rows=500)


def _observe(
    guard: CanaryGuard,
    passes: int,
    canary: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    canary_ms: float = 2.0,
    error: bool = False,
    rows: int = 50,
) -> None:
    rng = np.random.default_rng(1)
    for _ in range(passes):
        scores = rng.beta(0.5, 8, rows)
        flagged = scores >= 0.5
        if error:
            guard.observe(2.0, scores[:0], flagged[:0], canary_error=True)
            continue
        canary_scores, canary_flagged = canary(scores) if canary else (scores, flagged)
        guard.observe(2.0, scores, flagged, canary_scores, canary_flagged, canary_ms)


def test_a_canary_like_the_champion_holds_once_it_decided_enough_for_long_enough() -> None:
    clock = [0.0]
    guard = CanaryGuard("7", SMALL, now=lambda: clock[0])
    _observe(guard, 20)
    assert guard.judge() is None
    assert not guard.held()  # 1000 rows, but no time has passed
    clock[0] = 31.0
    assert guard.held()
    summary = guard.summary()
    assert summary["canary_rows"] == 1000 and summary["breach"] is None


@pytest.mark.parametrize(
    ("rule", "feed"),
    [
        ("errors", lambda g: _observe(g, 5, error=True)),
        ("latency", lambda g: _observe(g, 12, canary_ms=40.0)),
        ("flagged_share", lambda g: _observe(g, 4, lambda s: (s, np.ones(len(s), bool)))),
        ("score_shift", lambda g: _observe(g, 4, lambda s: (np.sqrt(s), s >= 0.5))),
    ],
)
def test_each_broken_slo_is_a_breach_that_stays(rule: str, feed: Callable) -> None:
    clock = [0.0]
    guard = CanaryGuard("8", SMALL, now=lambda: clock[0])
    feed(guard)
    breach = guard.judge()
    assert breach is not None and breach.rule == rule, breach
    assert breach.reason
    _observe(guard, 30)  # good passes afterwards do not clear it
    clock[0] = 1000.0
    assert guard.judge() is breach and not guard.held()


def test_a_few_requests_cannot_decide() -> None:
    guard = CanaryGuard("9", SMALL)
    _observe(guard, 1, lambda s: (s, np.ones(len(s), bool)), canary_ms=90.0)  # 50 rows, 1 pass
    assert guard.judge() is None


def test_invalid_slos_are_named() -> None:
    with pytest.raises(ValueError, match=r"max_latency_ratio must be >= 1.*min_rows must be >= 1"):
        CanarySlo(max_latency_ratio=0.5, min_rows=0)


# ---------------------------------------------------------------- with the trained world


@pytest.fixture
def canary_versions(world: World) -> Iterator[Callable[..., str]]:
    """Makes versions of the champion's model that passed the gate (optionally with other
    tags, e.g. a threshold of 0: flags everything); removes them and the canary afterwards."""
    client = world.client
    champion = client.get_model_version_by_alias(NAME, CHAMPION)
    made: list[str] = []

    def make(**tags: str) -> str:
        version = client.create_model_version(
            NAME,
            source=champion.source,
            run_id=champion.run_id,
            tags={**dict(champion.tags), "gate.decision": "passed", **tags},
        )
        made.append(str(version.version))
        return str(version.version)

    yield make
    client.set_registered_model_alias(NAME, CHAMPION, champion.version)
    with contextlib.suppress(MlflowException):  # gone with a rollback or promotion
        client.delete_registered_model_alias(NAME, CANARY)
    for version in made:
        client.delete_model_version(NAME, version)


def test_the_registry_releases_only_gated_versions_and_records_each_step(
    world: World, canary_versions: Callable[..., str]
) -> None:
    client = world.client
    champion = str(client.get_model_version_by_alias(NAME, CHAMPION).version)
    ungated = canary_versions(**{"gate.decision": "blocked", "gate.reasons": "PR-AUC too low"})
    with pytest.raises(RegistryError, match=f"version {ungated} cannot be a canary.*blocked"):
        start_canary(client, NAME, ungated, 0.05, "", "run")
    with pytest.raises(RegistryError, match="is the champion"):
        start_canary(client, NAME, champion, 0.05, "", "run")
    good = canary_versions()
    with pytest.raises(RegistryError, match=r"in \(0, 1\]"):
        start_canary(client, NAME, good, 1.5, "", "run")

    result = materialize(
        ["canary_release"],
        world.resources,
        world.instance,
        run_config={"ops": {"canary_release": {"config": {"version": int(good), "share": 0.05}}}},
    )
    assert metadata(result, "canary_release")["share"] == 0.05
    step = materialize(
        ["canary_release"],
        world.resources,
        world.instance,
        run_config={
            "ops": {
                "canary_release": {
                    "config": {"version": int(good), "share": 0.25, "reason": "quiet week"}
                }
            }
        },
    )
    stepped = metadata(step, "canary_release")
    assert stepped["previous_share"] == 0.05 and stepped["share"] == 0.25
    assert [s["share"] for s in stepped["history"]] == [0.05, 0.25]
    tags = client.get_model_version(NAME, good).tags
    assert tags["canary.status"] == "running" and float(tags["canary.share"]) == 0.25
    assert str(client.get_model_version_by_alias(NAME, CANARY).version) == good

    # another canary takes over; a rolled-back one is not released again
    newer = canary_versions()
    start_canary(client, NAME, newer, 0.05, "", "run")
    assert client.get_model_version(NAME, good).tags["canary.status"] == "replaced"
    record_rollback(client, NAME, newer, "errors", "calls failed", {"canary_errors": 9})
    with pytest.raises(Exception, match="alias"):  # the alias went with the rollback
        client.get_model_version_by_alias(NAME, CANARY)
    failed = materialize(
        ["canary_release"],
        world.resources,
        world.instance,
        run_config={"ops": {"canary_release": {"config": {"version": int(newer)}}}},
        raise_on_error=False,
    )
    assert not failed.success
    assert "was rolled back as a canary" in str(failed.all_events)


def _app(
    world: World,
    wrap: Callable[[Callable[[pd.DataFrame], np.ndarray]], Callable] | None = None,
    log_lake: DeltaLake | None = None,
    **slo: Any,
) -> Any:
    """The service over the world, its canary loaded through ``wrap`` (a deliberately bad
    model around the real one) and judged by small SLOs."""
    mlflow_tracking = world.resources["mlflow_tracking"]
    lake = world.resources["lake"]

    def loader(model: AliasedModel) -> Callable:
        scorer = load_scorer(model, threads=1)
        return wrap(scorer) if wrap else scorer

    config = ServeConfig(
        model_name=NAME,
        max_batch_size=MAX_BATCH,
        refresh_seconds=0,
        log_flush_seconds=0.2,
        canary_judge_seconds=0.05,
        canary_slo=CanarySlo(**{"min_rows": 100, "min_passes": 10, **slo}),
    )
    return create_app(
        ModelHolder(mlflow_tracking.client, NAME, CHAMPION),
        lambda: load_history(lake, config.history_days),
        config,
        history_version=lambda: lake.version(VALIDATED_TRANSACTIONS),
        log_writer=log_lake.appender(SERVED_PREDICTIONS) if log_lake else None,
        canary_holder=ModelHolder(mlflow_tracking.client, NAME, CANARY, loader=loader),
        canary_recorder=RegistryRecorder(mlflow_tracking.client),
    )


def _slow(scorer: Callable) -> Callable:
    def slow(frame: pd.DataFrame) -> np.ndarray:
        time.sleep(0.04)
        return scorer(frame)

    return slow


def _broken(scorer: Callable) -> Callable:
    def broken(frame: pd.DataFrame) -> np.ndarray:
        raise RuntimeError("a deliberately broken canary")

    return broken


@pytest.mark.parametrize(
    ("case", "wrap", "tags", "rule"),
    [
        ("slow", _slow, {}, "latency"),
        ("erroring", _broken, {}, "errors"),
        ("flags everything", None, {"threshold": "0.0"}, "flagged_share"),
    ],
)
def test_a_bad_canary_is_rolled_back_and_no_request_fails(
    world: World,
    canary_versions: Callable[..., str],
    case: str,
    wrap: Callable | None,
    tags: dict[str, str],
    rule: str,
) -> None:
    client_ = world.client
    champion = int(client_.get_model_version_by_alias(NAME, CHAMPION).version)
    bad = canary_versions(**tags)
    start_canary(client_, NAME, bad, 0.5, f"test: {case}", "run")
    requests = world.requests[:400]
    routed = routed_to_canary([r["nameOrig"] for r in requests], 0.5)
    answered: list[dict[str, Any]] = []
    with TestClient(_app(world, wrap)) as client:
        assert client.get("/model-info").json()["canary"]["state"] == "running"
        for request in requests:  # one request per pass, as light traffic comes
            response = client.post("/predict", json=request)
            assert response.status_code == 200, response.text  # never a failed request
            answered.append(response.json())
            if client.get("/model-info").json()["canary"]["state"] == "rolled_back":
                break
        info = wait_for(
            lambda: (
                (i := client.get("/model-info").json())["canary"]["state"] == "rolled_back" and i
            )
        )
        # the champion serves everything from now on, with its own scores
        after = [client.post("/predict", json=r).json() for r in requests[:60]]
        assert {a["model_version"] for a in after} == {champion}
        metrics = client.get("/metrics").text
    assert len(answered) < len(requests), f"the {case} canary was never rolled back"
    decided = [(a["model_version"], r) for a, r in zip(answered, routed, strict=False)]
    assert {version for version, r in decided if not r} == {champion}
    routed_versions = [version for version, r in decided if r]
    if case == "erroring":  # it never decided a request: its rows got the champion's scores
        assert set(routed_versions) == {champion}
    else:  # it decided its accounts until the breach, and never after
        out = routed_versions.index(champion) if champion in routed_versions else None
        assert routed_versions[0] == int(bad)
        assert out is None or set(routed_versions[out:]) == {champion}
    assert info["canary"]["guard"]["breach"]
    assert f'mlops_serve_canary_rollbacks_total{{rule="{rule}",version="{bad}"}} 1.0' in metrics
    assert "mlops_serve_canary_share 0.0" in metrics
    recorded = wait_for(
        lambda: client_.get_model_version(NAME, bad).tags.get("canary.rollback_rule")
    )
    assert recorded == rule
    assert client_.get_model_version(NAME, bad).tags["canary.status"] == "rolled_back"
    with pytest.raises(Exception, match="alias"):
        client_.get_model_version_by_alias(NAME, CANARY)

    # the sensor reports it: an observation on canary_release, and an alert
    sensor = build_canary_sensor()
    with dg.build_sensor_context(instance=world.instance, resources=world.resources) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    (event,) = result.asset_events
    assert event.metadata["rule"].value == rule
    assert event.metadata["model_version"].value == int(bad)


def test_a_canary_decides_its_accounts_and_is_promoted_once_it_held(
    world: World, canary_versions: Callable[..., str], tmp_path: Any
) -> None:
    client_ = world.client
    champion = int(client_.get_model_version_by_alias(NAME, CHAMPION).version)
    good = canary_versions()
    start_canary(client_, NAME, good, 0.3, "test: a good canary", "run")
    log_lake = DeltaLake(root_uri=str(tmp_path / "log"))
    requests = world.requests[:1000]
    with TestClient(_app(world, log_lake=log_lake, hold_seconds=0, hold_rows=200)) as client:
        answers = []
        for start in range(0, len(requests), 100):
            response = client.post("/predict/batch", json={"transactions": requests[start:][:100]})
            assert response.status_code == 200
            answers += response.json()["predictions"]
        singles = [client.post("/predict", json=r).json() for r in requests[:50]]
        wait_for(lambda: client_.get_model_version(NAME, good).tags.get("canary.status") == "held")
        assert client.get("/model-info").json()["canary"]["state"] == "held"

        # every answer names the version that decided it: the canary for its accounts
        routed = routed_to_canary([r["nameOrig"] for r in requests], 0.3)
        assert 0.2 < routed.mean() < 0.4
        expected = np.where(routed, int(good), champion)
        assert [a["model_version"] for a in answers] == expected.tolist()
        assert [s["model_version"] for s in singles] == expected[:50].tolist()
        assert {a["model_alias"] for a, r in zip(answers, routed, strict=True) if r} == {CANARY}

        # the sensor asks for the promotion, which goes through the gate rules
        with dg.build_sensor_context(instance=world.instance, resources=world.resources) as context:
            result = build_canary_sensor()(context)
        (run,) = result.run_requests
        assert run.run_config["ops"]["champion_model"]["config"]["promote_version"] == int(good)
        promoted = materialize(
            ["champion_model"], world.resources, world.instance, run_config=run.run_config
        )
        assert metadata(promoted, "champion_model")["model_version"] == int(good)
        assert client_.get_model_version(NAME, good).tags["canary.status"] == "promoted"
        reloaded = client.post("/reload").json()["model"]
        assert reloaded["version"] == good and reloaded["canary"]["state"] == "inactive"
        after = client.post("/predict/batch", json={"transactions": requests[:100]}).json()
        assert {p["model_version"] for p in after["predictions"]} == {int(good)}

    logged = pl.from_arrow(log_lake.read(SERVED_PREDICTIONS))
    keys = ["transaction_id", "model_version", "model_alias", "fraud_score", "threshold"]
    rows = set(logged.select(keys).iter_rows())
    for answer in [*answers, *singles, *after["predictions"]]:
        assert tuple(answer[k] for k in keys) in rows
    assert logged.height == len(answers) + len(singles) + len(after["predictions"])


def _labels_of(world: World) -> pl.DataFrame:
    return pl.from_arrow(
        world.resources["lake"].read(
            VALIDATED_TRANSACTIONS, days=[DAY], columns=["transaction_id", "isFraud", "txn_date"]
        )
    ).with_columns(pl.col("isFraud").cast(pl.Int64))


def test_the_ab_report_compares_the_versions_of_a_real_served_log(
    world: World, canary_versions: Callable[..., str], tmp_path: Any
) -> None:
    client_ = world.client
    champion = int(client_.get_model_version_by_alias(NAME, CHAMPION).version)
    canary = canary_versions()
    start_canary(client_, NAME, canary, 0.5, "test: A/B", "run")
    log_lake = DeltaLake(root_uri=str(tmp_path / "lake"))
    with TestClient(_app(world, log_lake=log_lake, hold_seconds=10**6)) as client:
        for start in range(0, len(world.requests), 250):
            chunk = world.requests[start : start + 250]
            assert client.post("/predict/batch", json={"transactions": chunk}).status_code == 200
    resources = {**world.resources, "lake": log_lake}
    nothing = materialize(["model_ab_report"], resources, world.instance, raise_on_error=False)
    assert nothing.success  # served rows and no labels yet: volumes only
    report = metadata(nothing, "model_ab_report")
    versions = {v["version"]: v for v in report["versions"]}
    assert set(versions) == {champion, int(canary)}
    assert versions[champion]["volume"] + versions[int(canary)]["volume"] == len(world.requests)
    assert versions[int(canary)]["recall"] is None  # no labels: not measured
    assert "insufficient labels" in report["comparisons"][0]["verdict"]
    # the labels arrive: precision and recall per version
    log_lake.overwrite_day(TRANSACTION_LABELS, _labels_of(world).to_arrow(), DAY)
    labelled = metadata(
        materialize(["model_ab_report"], resources, world.instance), "model_ab_report"
    )
    versions = {v["version"]: v for v in labelled["versions"]}
    assert versions[champion]["labelled"] == versions[champion]["volume"]
    assert versions[champion]["fraud"] > 0 and versions[champion]["recall"] is not None
    assert "<img src='data:image/png;base64," in Path(labelled["report"]).read_text()


def test_a_canary_whose_labels_show_it_misses_fraud_is_rolled_back_by_the_sensor(
    world: World, canary_versions: Callable[..., str], tmp_path: Any
) -> None:
    client_ = world.client
    champion = int(client_.get_model_version_by_alias(NAME, CHAMPION).version)
    canary = canary_versions()
    start_canary(client_, NAME, canary, 0.5, "test: labels", "run")
    # a served log where the canary caught 20 of 200 labelled frauds, the champion 180 of 200
    rows = []
    for version, alias, caught in ((champion, "champion", 180), (int(canary), "canary", 20)):
        for i in range(2000):
            rows.append(
                {
                    "transaction_id": f"{alias}-{i}",
                    "txn_date": DAY,
                    "model_version": version,
                    "model_alias": alias,
                    "fraud_score": 0.9 if i < caught else 0.1,
                    "is_fraud_predicted": i < caught,
                    "served_at": datetime(2026, 1, 5, tzinfo=UTC),
                    "isFraud": int(i < 200),
                }
            )
    frame = pl.DataFrame(rows)
    lake = DeltaLake(root_uri=str(tmp_path / "lake"))
    lake.overwrite_day(SERVED_PREDICTIONS, frame.drop("isFraud").to_arrow(), DAY)
    lake.overwrite_day(
        TRANSACTION_LABELS, frame.select("transaction_id", "isFraud", "txn_date").to_arrow(), DAY
    )
    resources = {**world.resources, "lake": lake}
    report = metadata(
        materialize(["model_ab_report"], resources, world.instance), "model_ab_report"
    )
    assert "recall significantly lower" in report["comparisons"][0]["verdict"]
    with dg.build_sensor_context(instance=world.instance, resources=world.resources) as context:
        first = build_canary_sensor()(context)
    assert not getattr(first, "run_requests", None)  # never promoted
    tags = client_.get_model_version(NAME, canary).tags
    assert tags["canary.status"] == "rolled_back" and tags["canary.rollback_rule"] == "labels"
    with dg.build_sensor_context(instance=world.instance, resources=world.resources) as context:
        reported = build_canary_sensor()(context)
    assert [e.metadata["rule"].value for e in reported.asset_events] == ["labels"]
