"""The promotion assets: ``challenger_model`` (with the blocking gate) and ``champion_model``."""

from collections.abc import Iterator
from dataclasses import replace

import dagster as dg
from pydantic import Field

from mlops_assets.features.definition import LABEL_COLUMN
from mlops_assets.registry.canary import record_promoted
from mlops_assets.registry.champion import AliasedModel, find_alias, load_scorer
from mlops_assets.registry.gate import decide
from mlops_assets.registry.versions import (
    CHALLENGER,
    CHAMPION,
    RegistryError,
    promote,
    rollback,
)
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.train.assets import CANDIDATE_ASSETS, TRAINING_SET
from mlops_assets.train.dataset import TrainingSetSpec, read_window
from mlops_assets.train.metrics import HoldoutMetrics, evaluate
from mlops_assets.upstream import latest_metadata

CHALLENGER_MODEL = dg.AssetKey("challenger_model")
GATE_CHECK = "beats_champion"
CANDIDATE_KEYS = [a.key.to_user_string() for a in CANDIDATE_ASSETS]


def _holdout_metrics(model: AliasedModel, holdout, target_precision: float) -> HoldoutMetrics:
    scores = load_scorer(model)(holdout)
    return evaluate(holdout[LABEL_COLUMN].to_numpy(), scores, model.threshold, target_precision)


@dg.asset(
    deps=["training_set", *CANDIDATE_KEYS],
    group_name="registry",
    kinds={"mlflow"},
    check_specs=[
        dg.AssetCheckSpec(
            GATE_CHECK,
            asset=CHALLENGER_MODEL,
            blocking=True,
            description="The gate: the challenger must beat the champion, both scored on the same "
            "held-out rows, by MLOPS_GATE_MARGIN on MLOPS_GATE_METRIC, and meet the minimum "
            "PR-AUC and ROC-AUC. A failure stops champion_model in the same run.",
        )
    ],
)
def challenger_model(
    context: dg.AssetExecutionContext,
    lake: DeltaLake,
    mlflow_tracking: MlflowTracking,
    policy: PipelinePolicy,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """The best of this round's candidates on the holdout, given the MLflow alias `challenger`,
    then judged against the current `champion` on the same held-out rows. The gate's inputs
    (both models' metrics) and its decision are this asset's metadata, its check, and tags
    (`gate.*`) on the challenger's model version."""
    rule = policy.gate_rule()
    candidates = {key: latest_metadata(context, key) for key in CANDIDATE_KEYS}
    best_key = max(candidates, key=lambda key: float(candidates[key][rule.metric]))
    version = str(candidates[best_key]["model_version"])
    client = mlflow_tracking.client()
    client.set_registered_model_alias(policy.model_name, CHALLENGER, version)
    challenger = find_alias(client, policy.model_name, CHALLENGER)
    champion = find_alias(client, policy.model_name, CHAMPION)
    assert challenger is not None

    # the pinned set's held-out days alone: the gate never reads the (maybe large) fit days
    spec = TrainingSetSpec.from_metadata(latest_metadata(context, TRAINING_SET)["spec"])
    holdout = read_window(lake, (), spec.holdout_days, spec.features_version)
    challenger_metrics = _holdout_metrics(challenger, holdout, policy.target_precision)
    champion_metrics = (
        None if champion is None else _holdout_metrics(champion, holdout, policy.target_precision)
    )
    decision = decide(rule, challenger_metrics, champion_metrics)
    for key, value in decision.as_tags().items():
        client.set_model_version_tag(policy.model_name, version, key, value)
    context.log.info(f"Gate for v{version} ({challenger.family}): {decision.summary}")

    compared = {
        "challenger": {
            "version": version,
            "family": challenger.family,
            **challenger_metrics.as_dict(),
        },
        "candidates": {
            key: {"version": meta["model_version"], rule.metric: meta[rule.metric]}
            for key, meta in candidates.items()
        },
    }
    if champion is not None and champion_metrics is not None:
        compared["champion"] = {
            "version": champion.version,
            "family": champion.family,
            **champion_metrics.as_dict(),
        }
    gate_metadata = {
        "decision": "passed" if decision.passed else "blocked",
        "metric": rule.metric,
        "margin": rule.margin,
        "challenger_value": decision.challenger_value,
        "champion_value": decision.champion_value if decision.champion_value is not None else -1.0,
        "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
    }
    yield dg.MaterializeResult(
        metadata={
            "model_name": policy.model_name,
            "model_version": int(version),
            "model_family": challenger.family,
            "champion_version": int(champion.version) if champion else -1,
            "holdout_rows": len(holdout),
            "comparison": dg.MetadataValue.json(compared),
            **{f"gate_{k}": v for k, v in gate_metadata.items()},
            "mlflow_model_version": dg.MetadataValue.url(
                mlflow_tracking.model_version_url(policy.model_name, version)
            ),
        }
    )
    yield dg.AssetCheckResult(
        check_name=GATE_CHECK,
        passed=decision.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=decision.summary,
        metadata=gate_metadata,
    )


class ChampionConfig(dg.Config):
    """Promote the gated challenger (default) or a given version (a held canary), or roll back
    to an earlier champion."""

    promote_version: int | None = Field(
        None,
        description="Promote this version (a canary that held its SLOs) instead of the latest "
        "challenger; its gate decision must have passed.",
    )
    rollback_to_version: int | None = Field(
        None, description="Make this earlier champion version the champion again."
    )
    reason: str = Field("", description="Why (recorded with a rollback).")


@dg.asset(deps=[CHALLENGER_MODEL], group_name="registry", kinds={"mlflow"})
def champion_model(
    context: dg.AssetExecutionContext,
    config: ChampionConfig,
    mlflow_tracking: MlflowTracking,
    policy: PipelinePolicy,
) -> dg.MaterializeResult:
    """The model version behind the `champion` alias, which batch scoring loads. Moves only to a
    challenger whose gate decision passed (recorded on the version), or, with
    `rollback_to_version`, back to an earlier champion, or with `promote_version` to a canary
    that held its SLOs (`canary_sensor` asks for it; the gate rules still apply); every move
    is recorded on the versions (`promoted_at`, `previous_champion`, `replaced_by`,
    `rollback.*`) and in this asset's history."""
    client = mlflow_tracking.client()
    run_id = context.run.run_id
    try:
        if config.rollback_to_version is not None and config.promote_version is not None:
            raise RegistryError("give either rollback_to_version or promote_version, not both")
        if config.rollback_to_version is not None:
            move = rollback(
                client, policy.model_name, str(config.rollback_to_version), config.reason, run_id
            )
        elif config.promote_version is not None:
            move = promote(client, policy.model_name, str(config.promote_version), run_id)
            move = replace(move, reason=config.reason or move.reason)
        else:
            version = str(latest_metadata(context, "challenger_model")["model_version"])
            move = promote(client, policy.model_name, version, run_id)
    except RegistryError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error
    record_promoted(client, policy.model_name, move.version)  # leaves the canary alias
    champion = find_alias(client, policy.model_name, CHAMPION)
    assert champion is not None
    context.log.info(
        f"{move.kind}: {policy.model_name} @champion v{move.previous or '-'} -> v{move.version}"
    )
    return dg.MaterializeResult(
        metadata={
            "model_name": policy.model_name,
            "model_version": int(move.version),
            "model_family": champion.family,
            "previous_version": int(move.previous) if move.previous else -1,
            "move": move.kind,
            "reason": move.reason,
            "threshold": champion.threshold,
            "holdout_pr_auc": float(champion.tags.get("holdout.pr_auc", "nan")),
            "lineage": dg.MetadataValue.json(
                {k: v for k, v in champion.tags.items() if k.startswith("lineage.")}
            ),
            "mlflow_model_version": dg.MetadataValue.url(
                mlflow_tracking.model_version_url(policy.model_name, move.version)
            ),
        }
    )
