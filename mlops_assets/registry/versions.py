"""Model versions in the MLflow registry: registering candidates, promotion and rollback.

Every alias move leaves a record on the versions involved (``promoted_at``, ``replaced_by``,
``rollback.*`` tags) besides the Dagster materialization of ``champion_model`` that made it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"


class RegistryError(ValueError):
    """A registry operation that must not happen (the message says why and what to do)."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def register_version(
    client: Any, name: str, model_uri: str, run_id: str, tags: dict[str, str]
) -> str:
    """Register ``model_uri`` as a new version of ``name`` (created if needed); its number."""
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # exists already (or created concurrently)
        client.create_registered_model(name)
    version = client.create_model_version(name, model_uri, run_id=run_id, tags=tags)
    return str(version.version)


def version_tags(client: Any, name: str, version: str) -> dict[str, str]:
    try:
        return dict(client.get_model_version(name, version).tags)
    except Exception as error:  # MlflowException: RESOURCE_DOES_NOT_EXIST
        raise RegistryError(f"Model {name} has no version {version}: {error}") from error


def current_version(client: Any, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


@dataclass(frozen=True)
class AliasMove:
    """One move of the champion alias."""

    name: str
    version: str
    previous: str | None
    kind: str  # "promotion" or "rollback"
    at: str
    reason: str


def promote(client: Any, name: str, version: str, dagster_run_id: str) -> AliasMove:
    """Make ``version`` the champion; it must carry a passed gate decision."""
    tags = version_tags(client, name, version)
    require_passed_gate(tags, f"{name} version {version} cannot become champion", "is promoted")
    previous = current_version(client, name, CHAMPION)
    return _move(
        client, name, version, previous, "promotion", tags.get("gate.reasons", ""), dagster_run_id
    )


def require_passed_gate(tags: dict[str, str], refusal: str, what_passes: str) -> None:
    """The gate rule every move into live traffic obeys: the version's ``gate.decision`` tag
    must be ``passed`` (``refusal`` starts the error, e.g. "v7 cannot become champion")."""
    decision = tags.get("gate.decision")
    if decision != "passed":
        raise RegistryError(
            f"{refusal}: its gate decision is {decision or 'missing'} "
            f"({tags.get('gate.reasons', 'never judged')}). Only a version that passed the gate "
            f"{what_passes}."
        )


def rollback(client: Any, name: str, version: str, reason: str, dagster_run_id: str) -> AliasMove:
    """Move the champion back to an earlier ``version`` that was champion before."""
    tags = version_tags(client, name, version)
    previous = current_version(client, name, CHAMPION)
    if previous == str(version):
        raise RegistryError(
            f"{name} version {version} is already the champion; nothing to roll back"
        )
    if "promoted_at" not in tags:
        raise RegistryError(
            f"{name} version {version} was never champion (no promoted_at tag); a rollback "
            "returns to an earlier champion. Versions that were champion: "
            f"{', '.join(past_champions(client, name)) or 'none'}"
        )
    return _move(
        client, name, version, previous, "rollback", reason or "no reason given", dagster_run_id
    )


def past_champions(client: Any, name: str) -> list[str]:
    """Versions of ``name`` that have been champion at some point, oldest first."""
    versions = client.search_model_versions(f"name = '{name}'")
    return sorted((str(v.version) for v in versions if "promoted_at" in v.tags), key=int)


def _move(
    client: Any,
    name: str,
    version: str,
    previous: str | None,
    kind: str,
    reason: str,
    dagster_run_id: str,
) -> AliasMove:
    at = now()
    client.set_registered_model_alias(name, CHAMPION, version)
    record = {
        "promoted_at": at,
        "promoted_by_dagster_run": dagster_run_id,
        "promotion_kind": kind,
        "previous_champion": previous or "none",
    }
    if kind == "rollback":
        record.update(
            {
                "rollback.at": at,
                "rollback.from_version": previous or "none",
                "rollback.reason": reason,
            }
        )
    for key, value in record.items():
        client.set_model_version_tag(name, version, key, value)
    if previous is not None:
        client.set_model_version_tag(name, previous, "replaced_at", at)
        client.set_model_version_tag(name, previous, "replaced_by", str(version))
    return AliasMove(
        name=name, version=str(version), previous=previous, kind=kind, at=at, reason=reason
    )
