"""Choosing the training window and its time-based holdout from the days that have features."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class TrainingWindow:
    """Days to fit on and the later days to judge on (never shuffled across time)."""

    fit_days: list[date]
    holdout_days: list[date]

    @property
    def all_days(self) -> list[date]:
        return [*self.fit_days, *self.holdout_days]

    @property
    def first_day(self) -> date:
        return self.all_days[0]

    @property
    def last_day(self) -> date:
        return self.all_days[-1]


def choose_window(
    available: list[date], window_days: int, holdout_days: int, end: date | None = None
) -> TrainingWindow:
    """The latest ``window_days`` days up to ``end``; the last ``holdout_days`` held out."""
    if holdout_days < 1 or window_days <= holdout_days:
        raise ValueError(
            f"window_days ({window_days}) must exceed holdout_days ({holdout_days}) >= 1"
        )
    candidates = sorted(d for d in available if end is None or d <= end)
    if len(candidates) <= holdout_days:
        raise ValueError(
            f"Training needs more than {holdout_days} day(s) of features up to "
            f"{end or 'the latest day'}; found {len(candidates)}: "
            f"{[d.isoformat() for d in candidates]} (a day counts once its features and the "
            "previous day's validated rows exist). Materialize more days first."
        )
    chosen = candidates[-window_days:]
    return TrainingWindow(fit_days=chosen[:-holdout_days], holdout_days=chosen[-holdout_days:])
