"""The canary in the model service: which version gets which accounts, and taking it out.

``CanaryController`` holds the version behind the ``canary`` alias (``ModelHolder``) and, while
it is active, a ``CanaryRoute`` the scoring thread reads once per pass: the model, its share
and its ``CanaryGuard``. The scoring thread scores the whole pass with the champion and the
routed rows again with the canary (``score``); a canary call that fails, returns the wrong
number of scores or non-finite ones leaves those rows with the champion's scores and counts as
an error, so no request fails because of the canary.

A watcher thread judges the guard every ``judge_seconds``. On a breach the route is dropped at
once (the next pass is the champion's alone), the rollback is counted in the metrics and
logged, and then, off every request path, recorded on the version and the alias removed
(``registry/canary.py``). A canary that held its SLOs is recorded as held, for the
``canary_sensor`` to promote through the gate. The share is read from the version's
``canary.share`` tag on every poll, so raising it needs no restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from mlops_assets.registry.canary import HELD, RUNNING, parse_share
from mlops_assets.registry.champion import AliasedModel
from mlops_assets.registry.versions import RegistryError
from mlops_assets.serve.canary import Breach, CanaryGuard, CanarySlo, routed_to_canary
from mlops_assets.serve.model_holder import LoadedModel, ModelHolder

log = logging.getLogger(__name__)


class CanaryRecorder(Protocol):
    """Where a service records what happened to a canary (the registry, in production)."""

    def rolled_back(self, model: AliasedModel, breach: Breach, figures: dict[str, Any]) -> None: ...

    def held(self, model: AliasedModel, figures: dict[str, Any]) -> None: ...


class RegistryRecorder:
    """Records canary outcomes on the MLflow model version (``registry/canary.py``)."""

    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._client_factory = client_factory

    def rolled_back(self, model: AliasedModel, breach: Breach, figures: dict[str, Any]) -> None:
        from mlops_assets.registry.canary import record_rollback

        record_rollback(
            self._client_factory(), model.name, model.version, breach.rule, breach.reason, figures
        )

    def held(self, model: AliasedModel, figures: dict[str, Any]) -> None:
        from mlops_assets.registry.canary import record_held

        record_held(self._client_factory(), model.name, model.version, figures)


@dataclass(frozen=True)
class CanaryRoute:
    """What the scoring thread needs for one pass: the canary, its share, its guard."""

    model: LoadedModel
    share: float
    guard: CanaryGuard


@dataclass(frozen=True)
class CanaryVerdicts:
    """The canary's verdicts on the routed rows of one pass."""

    model: LoadedModel
    rows: np.ndarray  # bool mask over the pass
    scores: np.ndarray
    decisions: np.ndarray


class CanaryController:
    """The canary's life in one service process (see the module doc)."""

    def __init__(
        self,
        holder: ModelHolder,
        champion: ModelHolder,
        slo: CanarySlo,
        default_share: float,
        recorder: CanaryRecorder | None = None,
        judge_seconds: float = 0.25,
        on_rollback: Callable[[str, str], None] | None = None,
        on_rows: Callable[[str, int], None] | None = None,
    ) -> None:
        self.holder = holder
        self.champion = champion
        self.slo = slo
        self.default_share = parse_share(default_share)
        self.recorder = recorder
        self.judge_seconds = judge_seconds
        self._on_rollback = on_rollback or (lambda version, rule: None)
        self._on_rows = on_rows or (lambda outcome, rows: None)
        self._route: CanaryRoute | None = None
        self._guard: CanaryGuard | None = None
        self._held_recorded: set[str] = set()
        self.state = "inactive"  # inactive | running | held | rolled_back | promoted
        self.note: str | None = None
        self.rollbacks: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- what the scoring thread calls -----------------------------------------------------
    @property
    def route(self) -> CanaryRoute | None:
        return self._route

    def score(
        self,
        features: pd.DataFrame,
        champion_scores: np.ndarray,
        champion_decisions: np.ndarray,
        champion_ms: float,
    ) -> CanaryVerdicts | None:
        """Score this pass's routed rows with the canary (None: none routed, or it failed)."""
        route = self._route
        if route is None:
            return None
        guard = route.guard
        rows = routed_to_canary(features["nameOrig"].to_numpy(), route.share)
        if not rows.any():
            guard.observe(champion_ms, champion_scores[:0], champion_decisions[:0])
            return None
        routed = int(rows.sum())
        started = time.perf_counter()
        try:
            raw = np.asarray(route.model.scorer(features.loc[rows]))
            if raw.shape != (routed,) or not np.isfinite(raw).all():
                raise ValueError(
                    f"the canary returned {raw.shape} scores for {routed} rows"
                    + ("" if raw.shape != (routed,) else " with non-finite values")
                )
        except Exception as error:
            guard.observe(
                champion_ms, champion_scores[:0], champion_decisions[:0], canary_error=True
            )
            self._on_rows("fallback", routed)
            log.warning(
                "canary v%s failed on %d row(s), the champion's scores were served: %s: %s",
                route.model.version,
                routed,
                type(error).__name__,
                error,
            )
            return None
        canary_ms = (time.perf_counter() - started) * 1000.0
        scores = raw.astype(np.float64)
        decisions = raw >= route.model.threshold
        guard.observe(
            champion_ms,
            champion_scores[rows],
            champion_decisions[rows],
            scores,
            decisions,
            canary_ms,
        )
        self._on_rows("served", routed)
        return CanaryVerdicts(route.model, rows, scores, decisions)

    # --- polling: follow the alias and the version's tags ----------------------------------
    def reload(self, force: bool = False) -> dict[str, Any]:
        """Resolve the canary alias again and (de)activate the route accordingly."""
        outcome = self.holder.reload(force=force)
        resolved = self.holder.resolved
        with self._lock:
            if resolved is None:
                if self.holder.clear() is not None or self._route is not None:
                    log.info("canary alias %s@%s removed", self.holder.name, self.holder.alias)
                if self.state == "rolled_back":  # keep saying why it went
                    self._route = None
                else:
                    self._deactivate("inactive", None)
                return self.info()
            current = self.holder.current
            if current is None or current.version != resolved.version:
                # the version the alias names could not be loaded: route nothing to it
                self._deactivate("inactive", f"v{resolved.version} failed to load: {outcome.error}")
                return self.info()
            champion = self.champion.current
            status = resolved.tags.get("canary.status", RUNNING)
            if champion is not None and champion.version == current.version:
                self._deactivate("promoted", f"v{current.version} is the champion")
                return self.info()
            if status not in (RUNNING, HELD):
                self._deactivate(status, f"v{current.version} is {status}")
                return self.info()
            try:
                share = parse_share(resolved.tags.get("canary.share", self.default_share))
            except RegistryError as error:
                share = self.default_share
                log.warning("canary v%s: %s; using %s", current.version, error, share)
            guard = self._guard
            if guard is None or guard.version != current.version:
                guard = CanaryGuard(current.version, self.slo)
                self._guard = guard
                log.info("canary v%s starts at %.1f%% of accounts", current.version, share * 100)
            if guard.breach is not None:
                self._deactivate("rolled_back", guard.breach.reason)
                return self.info()
            previous = self._route
            if previous is not None and previous.share != share:
                log.info(
                    "canary v%s share %.1f%% -> %.1f%%",
                    current.version,
                    previous.share * 100,
                    share * 100,
                )
            self._route = CanaryRoute(current, share, guard)
            self.state = HELD if current.version in self._held_recorded else "running"
            self.note = None
        return self.info()

    def _deactivate(self, state: str, note: str | None) -> None:
        self._route = None
        self.state = state
        self.note = note

    # --- the watcher ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._watch, name="canary-guard", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(10)
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.judge_seconds):
            try:
                self.check()
            except Exception:  # the watcher never dies of one bad round
                log.exception("judging the canary failed")

    def check(self) -> Breach | None:
        """Judge the running canary once: take it out on a breach, record it when held."""
        route = self._route
        if route is None:
            return None
        breach = route.guard.judge()
        if breach is not None:
            with self._lock:
                if self._route is route:
                    self._deactivate("rolled_back", breach.reason)
            figures = route.guard.summary()
            self.rollbacks.append({"version": route.model.version, "rule": breach.rule, **figures})
            self._on_rollback(route.model.version, breach.rule)
            log.error(
                "canary v%s rolled back (%s): %s; the champion serves all traffic",
                route.model.version,
                breach.rule,
                breach.reason,
            )
            self._record(lambda: self.recorder.rolled_back(route.model.model, breach, figures))
            return breach
        version = route.model.version
        if version not in self._held_recorded and route.guard.held():
            self._held_recorded.add(version)
            self.state = HELD
            figures = route.guard.summary()
            log.info("canary v%s held its SLOs: %s", version, figures)
            self._record(lambda: self.recorder.held(route.model.model, figures))
        return None

    def _record(self, action: Callable[[], None]) -> None:
        """Record in the registry off the watcher (a slow registry delays nothing)."""
        if self.recorder is None:
            return

        def run() -> None:
            for attempt in range(3):
                try:
                    action()
                    return
                except Exception:
                    log.exception("recording the canary outcome failed (attempt %d)", attempt + 1)
                    time.sleep(1.0 + attempt)

        threading.Thread(target=run, name="canary-record", daemon=True).start()

    def info(self) -> dict[str, Any]:
        """The canary section of ``/model-info``."""
        route = self._route
        current = self.holder.current
        guard = self._guard
        return {
            "alias": self.holder.alias,
            "state": self.state,
            "version": current.version if current else None,
            "share": route.share if route else 0.0,
            "note": self.note,
            "error": self.holder.last_error if self.holder.resolved is not None else None,
            "slo": dict(vars(self.slo)),
            "guard": guard.summary() if guard is not None else None,
            "rollbacks": list(self.rollbacks),
        }
