"""The model the service scores with: the version behind an alias, swappable while serving."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.registry.champion import AliasedModel, find_alias, load_scorer

Scorer = Callable[[pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class LoadedModel:
    """One loaded version: what it is and the function that scores with it (immutable, so a
    request that took it keeps using it while a reload swaps in another)."""

    model: AliasedModel
    scorer: Scorer
    loaded_at: datetime
    load_seconds: float

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def threshold(self) -> float:
        return self.model.threshold

    def lineage(self) -> dict[str, str]:
        return {k: v for k, v in self.model.tags.items() if k.startswith("lineage.")}

    def info(self) -> dict[str, Any]:
        return {
            "name": self.model.name,
            "alias": self.model.alias,
            "version": self.model.version,
            "run_id": self.model.run_id,
            "family": self.model.family,
            "threshold": self.model.threshold,
            "uri": self.model.uri,
            "loaded_at": self.loaded_at.isoformat(),
            "load_seconds": round(self.load_seconds, 3),
            "lineage": self.lineage(),
            "tags": dict(self.model.tags),
        }


@dataclass
class ReloadOutcome:
    """What a reload did."""

    ok: bool
    changed: bool
    version: str | None
    previous_version: str | None
    error: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "changed": self.changed,
            "version": self.version,
            "previous_version": self.previous_version,
            "error": self.error,
            "at": self.at.isoformat(),
        }


class ModelHolder:
    """Holds the current version of ``name@alias``.

    ``reload`` resolves the alias, loads the new version beside the one serving and swaps the
    reference under a lock; a version that fails to resolve or load leaves the old one serving
    and is recorded as ``last_error``.
    """

    def __init__(
        self,
        client_factory: Callable[[], Any],
        name: str,
        alias: str,
        loader: Callable[[AliasedModel], Scorer] = load_scorer,
    ) -> None:
        self._client_factory = client_factory
        self.name = name
        self.alias = alias
        self._loader = loader
        self._current: LoadedModel | None = None
        self._swap_lock = threading.Lock()
        self._reload_lock = threading.Lock()  # one load at a time
        self.last_error: str | None = None
        self.last_reload: ReloadOutcome | None = None
        #: what the alias pointed at on the last reload, tags included (None: no such alias),
        #: even when the version did not change and was not loaded again
        self.resolved: AliasedModel | None = None

    def clear(self) -> LoadedModel | None:
        """Stop holding a model (its alias was removed); the model it held."""
        with self._swap_lock:
            dropped, self._current = self._current, None
        return dropped

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    @property
    def ready(self) -> bool:
        return self._current is not None

    def reload(self, force: bool = False) -> ReloadOutcome:
        with self._reload_lock:
            previous = self._current
            previous_version = previous.version if previous else None
            try:
                found = find_alias(self._client_factory(), self.name, self.alias)
                self.resolved = found
                if found is None:
                    raise LookupError(f"no MLflow model version {self.name}@{self.alias}")
                if previous is not None and found.version == previous.version and not force:
                    outcome = ReloadOutcome(True, False, found.version, previous_version)
                    self.last_error = None
                    self.last_reload = outcome
                    return outcome
                started = time.perf_counter()
                scorer = self._loader(found)
                loaded = LoadedModel(
                    found, scorer, datetime.now(UTC), time.perf_counter() - started
                )
            except Exception as error:  # any load failure keeps the old model serving
                message = f"{type(error).__name__}: {error}"
                self.last_error = message
                outcome = ReloadOutcome(False, False, previous_version, previous_version, message)
                self.last_reload = outcome
                return outcome
            with self._swap_lock:
                self._current = loaded
            self.last_error = None
            outcome = ReloadOutcome(True, True, loaded.version, previous_version)
            self.last_reload = outcome
            return outcome
