"""Canary releases in Dagster: ``canary_release`` (start or step a canary from the launchpad),
``canary_promotion_job`` and the ``canary_sensor`` that promotes a held canary through the gate
or reports a rolled-back one."""

import json
from typing import Any

import dagster as dg
from pydantic import Field

from mlops_assets.monitor.alerts import Alert
from mlops_assets.registry.canary import (
    CANARY,
    HELD,
    ROLLED_BACK,
    record_rollback,
    start_canary,
)
from mlops_assets.registry.versions import CHALLENGER, RegistryError, current_version
from mlops_assets.resources.alerts import AlertSink
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.policy import PipelinePolicy

CANARY_RELEASE = dg.AssetKey("canary_release")


class CanaryConfig(dg.Config):
    """Which version to release to part of the traffic, to how much, and why."""

    version: int | None = Field(
        None, description="Model version to release (default: the current challenger)."
    )
    share: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Share of origin accounts it decides (sticky per account; raise it step by "
        "step by materializing again with a larger share).",
    )
    reason: str = Field("", description="Why (recorded on the version with the step).")


@dg.asset(group_name="registry", kinds={"mlflow"}, deps=["challenger_model"])
def canary_release(
    context: dg.AssetExecutionContext,
    config: CanaryConfig,
    mlflow_tracking: MlflowTracking,
    policy: PipelinePolicy,
) -> dg.MaterializeResult:
    """The version behind the `canary` alias and its share of live traffic. The model service
    routes that share of origin accounts to it (one customer sees one model), compares it with
    the champion on the same transactions (errors, p99 latency, score shift, flagged share) and
    takes it out of traffic on a broken SLO, recording why on the version (`canary.*` tags) and
    alerting. A canary that holds its SLOs for the hold time is promoted by `canary_sensor`
    through the gate rules. Only a version whose gate decision passed can be released."""
    client = mlflow_tracking.client()
    version = (
        str(config.version)
        if config.version is not None
        else current_version(client, policy.model_name, CHALLENGER)
    )
    if version is None:
        raise dg.Failure(
            description=f"No {policy.model_name}@{CHALLENGER} to release: run training_job "
            "first, or give the version in the config",
            allow_retries=False,
        )
    try:
        step = start_canary(
            client, policy.model_name, version, config.share, config.reason, context.run.run_id
        )
    except RegistryError as error:
        raise dg.Failure(description=str(error), allow_retries=False) from error
    tags = dict(client.get_model_version(policy.model_name, version).tags)
    change = (
        f"started at {step.share:.1%}"
        if step.previous_share is None
        else f"{step.previous_share:.1%} -> {step.share:.1%}"
    )
    context.log.info(f"canary {policy.model_name} v{version} {change}: {step.reason}")
    return dg.MaterializeResult(
        metadata={
            "model_name": policy.model_name,
            "model_version": int(version),
            "share": step.share,
            "previous_share": step.previous_share if step.previous_share is not None else 0.0,
            "replaced_version": int(step.replaced) if step.replaced else -1,
            "reason": step.reason,
            "status": tags.get("canary.status", ""),
            "history": dg.MetadataValue.json(json.loads(tags.get("canary.history", "[]"))),
            "mlflow_model_version": dg.MetadataValue.url(
                mlflow_tracking.model_version_url(policy.model_name, version)
            ),
        }
    )


canary_promotion_job = dg.define_asset_job(
    "canary_promotion_job",
    selection=dg.AssetSelection.keys("champion_model"),
    description="Promote a held canary: champion_model with promote_version (the gate rules "
    "apply: only a version whose gate decision passed becomes champion).",
)


def canary_sensor(
    context: dg.SensorEvaluationContext,
    mlflow_tracking: MlflowTracking,
    policy: PipelinePolicy,
    alerts: AlertSink,
) -> dg.SensorResult | dg.SkipReason:
    """A held canary -> a promotion run; a rolled-back one -> an observation and an alert."""
    client = mlflow_tracking.client()
    name = policy.model_name
    reported: list[str] = json.loads(context.cursor) if context.cursor else []
    versions = client.search_model_versions(f"name = '{name}'")
    events: list[dg.AssetObservation] = []
    for version in versions:
        tags: dict[str, Any] = dict(version.tags)
        number = str(version.version)
        if tags.get("canary.status") != ROLLED_BACK or number in reported:
            continue
        reported.append(number)
        rule, reason = tags.get("canary.rollback_rule", "?"), tags.get("canary.rollback_reason", "")
        events.append(
            dg.AssetObservation(
                asset_key=CANARY_RELEASE,
                metadata={
                    "event": "rolled_back",
                    "model_version": int(number),
                    "rule": rule,
                    "reason": reason,
                    "rolled_back_at": tags.get("canary.rolled_back_at", ""),
                    "figures": dg.MetadataValue.json(
                        json.loads(tags.get("canary.rollback_figures", "{}"))
                    ),
                    "mlflow_model_version": dg.MetadataValue.url(
                        mlflow_tracking.model_version_url(name, number)
                    ),
                },
            )
        )
        alerts.send(
            Alert(
                title=f"Canary {name} v{number} rolled back",
                text=f"The model service took the canary out of traffic ({rule}): {reason}. "
                "The champion serves all traffic.",
                severity="error",
                link=mlflow_tracking.model_version_url(name, number),
                link_text="Model version",
                fields={"rule": rule, "version": number},
            ),
            log=context.log,
        )
    runs: list[dg.RunRequest] = []
    canary = current_version(client, name, CANARY)
    if canary is not None:
        tags = dict(client.get_model_version(name, canary).tags)
        worse = _labelled_quality_worse(context.instance, canary)
        if tags.get("canary.status") in (HELD, "running") and worse:
            # the late labels say the canary misses fraud the champion catches: out it goes
            record_rollback(client, name, canary, "labels", worse, {"model_ab_report": worse})
            context.log.warning(f"canary v{canary} rolled back on its labels: {worse}")
        elif tags.get("canary.status") == HELD:
            reason = f"canary v{canary} held its SLOs: {tags.get('canary.held_figures', '')}"
            context.log.info(f"Requesting the promotion of {reason}")
            runs.append(
                dg.RunRequest(
                    run_key=f"promote-canary-{name}-v{canary}",
                    run_config={
                        "ops": {
                            "champion_model": {
                                "config": {"promote_version": int(canary), "reason": reason[:1000]}
                            }
                        }
                    },
                    tags={"mlops/canary_version": canary},
                )
            )
    if not events and not runs:
        state = "no canary" if canary is None else f"canary v{canary} running"
        return dg.SkipReason(f"{state}; nothing held or rolled back to report")
    return dg.SensorResult(run_requests=runs, asset_events=events, cursor=json.dumps(reported))


def _labelled_quality_worse(instance: dg.DagsterInstance, version: str) -> str | None:
    """The verdict of the latest ``model_ab_report`` when it found the version's precision or
    recall on labelled transactions significantly below the champion's (None otherwise, also
    while labels are too few to tell)."""
    record = instance.get_latest_materialization_event(dg.AssetKey("model_ab_report"))
    if record is None or record.asset_materialization is None:
        return None
    comparisons = record.asset_materialization.metadata.get("comparisons")
    for comparison in comparisons.value if comparisons is not None else []:
        if str(comparison.get("other")) != str(version):
            continue
        worse = [
            d
            for d in comparison.get("differences", [])
            if d["metric"] in ("recall", "precision")
            and d["significant"]
            and d["other"] < d["champion"]
        ]
        if worse:
            return str(comparison.get("verdict"))
    return None


def build_canary_sensor(running: bool = True) -> dg.SensorDefinition:
    """The canary's promotion and rollback reporting, started by default unless ``running`` is
    False."""
    return dg.sensor(
        name="canary_sensor",
        job=canary_promotion_job,
        minimum_interval_seconds=60,
        default_status=(
            dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
        ),
        description="Promotes the canary through champion_model once the model service records "
        "it as held (it kept every SLO for the hold time), unless the latest model_ab_report "
        "found its precision or recall on labelled transactions significantly below the "
        "champion's (then it rolls it back, rule 'labels'); and reports every rolled-back "
        "canary: an observation on canary_release with the broken SLO, and an alert.",
    )(canary_sensor)
