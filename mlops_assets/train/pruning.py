"""Pruning callbacks that report to Optuna at a bounded rate.

Every ``trial.report`` is a write to the study's storage (a SQLite or Postgres round trip) and
every ``should_prune`` a read. Reporting after each of a few hundred boosting rounds cost about
1.5 s per 100 rounds on a 1M-row trial here, a third of the training itself; reporting every
``every`` rounds keeps pruning decisions as timely as they need to be for a fraction of that.
"""

from __future__ import annotations

from typing import Any

import optuna
import xgboost as xgb


class ThrottledXGBoostPruning(xgb.callback.TrainingCallback):
    """optuna-integration's ``XGBoostPruningCallback``, consulted every ``every`` rounds."""

    def __init__(self, trial: optuna.Trial, observation_key: str, every: int = 10) -> None:
        from optuna_integration import XGBoostPruningCallback

        if every < 1:
            raise ValueError(f"every must be at least 1 (got {every})")
        self._inner = XGBoostPruningCallback(trial, observation_key)
        self._every = every

    def before_training(self, model: Any) -> Any:
        return self._inner.before_training(model)

    def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
        if (epoch + 1) % self._every:
            return False
        return self._inner.after_iteration(model, epoch, evals_log)
