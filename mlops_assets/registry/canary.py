"""Canary releases in the MLflow registry: the ``canary`` alias and the record on its version.

A canary is a version that passed the gate and serves a share of live traffic beside the
champion (the model service routes by origin account, ``serve/canary.py``). Everything about it
is on the version, so the service, the sensor and a person in the MLflow UI read the same
state:

- ``canary.status``: ``running`` -> ``held`` (it kept its SLOs for the hold time) -> ``promoted``,
  or ``rolled_back`` (a service took it out of traffic: ``canary.rollback_rule``,
  ``canary.rollback_reason``, ``canary.rolled_back_at``), or ``replaced`` (another canary
  started);
- ``canary.share``: the share of accounts it decides, which the service reads on every poll;
- ``canary.history``: the last steps (share, reason, Dagster run, time) as JSON.

A rolled-back version is not started again: the fix is a new candidate.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from mlops_assets.registry.versions import (
    CHAMPION,
    RegistryError,
    current_version,
    now,
    require_passed_gate,
    version_tags,
)

CANARY = "canary"
HISTORY_STEPS = 20
RUNNING, HELD, PROMOTED, ROLLED_BACK, REPLACED = (
    "running",
    "held",
    "promoted",
    "rolled_back",
    "replaced",
)


@dataclass(frozen=True)
class CanaryStep:
    """One start or share change of a canary."""

    name: str
    version: str
    share: float
    previous_share: float | None  # None: the version was not the canary before
    replaced: str | None  # the canary version this one took over from
    reason: str
    at: str


def parse_share(value: Any) -> float:
    """A canary share from a tag, config or setting; a clear error when it is not in (0, 1]."""
    try:
        share = float(value)
    except (TypeError, ValueError):
        raise RegistryError(f"canary share must be a number in (0, 1], got {value!r}") from None
    if not 0 < share <= 1:
        raise RegistryError(f"canary share must be in (0, 1] (a fraction of accounts), got {share}")
    return share


def start_canary(
    client: Any, name: str, version: str, share: float, reason: str, dagster_run_id: str
) -> CanaryStep:
    """Point ``canary`` at ``version`` with ``share`` of the traffic, or change the share of
    the running canary. The version must have passed the gate and must not be the champion or
    a rolled-back canary."""
    share = parse_share(share)
    version = str(version)
    tags = version_tags(client, name, version)
    require_passed_gate(tags, f"{name} version {version} cannot be a canary", "serves live traffic")
    if current_version(client, name, CHAMPION) == version:
        raise RegistryError(f"{name} version {version} is the champion; it serves all traffic")
    if tags.get("canary.status") == ROLLED_BACK:
        raise RegistryError(
            f"{name} version {version} was rolled back as a canary at "
            f"{tags.get('canary.rolled_back_at', '?')}: {tags.get('canary.rollback_reason', '')}. "
            "Train and gate a new candidate instead of releasing it again."
        )
    running = current_version(client, name, CANARY)
    previous_share = None
    if running == version:
        previous_share = float(tags.get("canary.share", "nan"))
    elif running is not None:
        client.set_model_version_tag(name, running, "canary.status", REPLACED)
        client.set_model_version_tag(name, running, "canary.replaced_by", version)
    at = now()
    step = CanaryStep(
        name=name,
        version=version,
        share=share,
        previous_share=previous_share,
        replaced=running if running != version else None,
        reason=reason or "no reason given",
        at=at,
    )
    history = _history(tags)
    history.append({"share": share, "reason": step.reason, "dagster_run": dagster_run_id, "at": at})
    record = {
        "canary.status": RUNNING,
        "canary.share": repr(share),
        "canary.reason": step.reason,
        "canary.updated_at": at,
        "canary.history": json.dumps(history[-HISTORY_STEPS:]),
    }
    if previous_share is None:
        record["canary.started_at"] = at
    for key, value in record.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CANARY, version)
    return step


def record_rollback(
    client: Any, name: str, version: str, rule: str, reason: str, figures: dict[str, Any]
) -> None:
    """What a service records when it takes the canary out of traffic: the broken SLO on the
    version, and the ``canary`` alias removed (if it still points at the version) so every
    replica and the next start stop routing to it."""
    at = now()
    for key, value in {
        "canary.status": ROLLED_BACK,
        "canary.rollback_rule": rule,
        "canary.rollback_reason": reason[:4000],
        "canary.rolled_back_at": at,
        "canary.rollback_figures": json.dumps(figures)[:4000],
    }.items():
        client.set_model_version_tag(name, version, key, value)
    _remove_alias(client, name, version)


def record_held(client: Any, name: str, version: str, figures: dict[str, Any]) -> None:
    """The canary kept every SLO for the hold time: ready for promotion through the gate."""
    tags = version_tags(client, name, version)
    if tags.get("canary.status") != RUNNING:
        return  # rolled back, replaced or promoted meanwhile: that record stands
    client.set_model_version_tag(name, version, "canary.status", HELD)
    client.set_model_version_tag(name, version, "canary.held_at", now())
    client.set_model_version_tag(name, version, "canary.held_figures", json.dumps(figures)[:4000])


def record_promoted(client: Any, name: str, version: str) -> None:
    """The canary became the champion: it leaves the ``canary`` alias."""
    if version_tags(client, name, version).get("canary.status") is None:
        return  # promoted without a canary
    client.set_model_version_tag(name, version, "canary.status", PROMOTED)
    client.set_model_version_tag(name, version, "canary.promoted_at", now())
    _remove_alias(client, name, version)


def _remove_alias(client: Any, name: str, version: str) -> None:
    from mlflow.exceptions import MlflowException

    if current_version(client, name, CANARY) == str(version):
        with contextlib.suppress(MlflowException):  # removed concurrently by another replica
            client.delete_registered_model_alias(name, CANARY)


def _history(tags: dict[str, str]) -> list[dict[str, Any]]:
    try:
        history = json.loads(tags.get("canary.history", "[]"))
    except ValueError:
        return []
    return history if isinstance(history, list) else []
