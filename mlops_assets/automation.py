"""When assets refresh on their own, and how fresh the daily assets must be."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

#: A daily asset should have yesterday's partition within 36 hours of the day's start.
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=36), warn_window=timedelta(hours=30)
)


def refresh_when_upstream_day_changes(
    ignore: tuple[str, ...] = (), blocking_checks: bool = False
) -> dg.AutomationCondition:
    """Materialize a day when an upstream partition it reads was updated since it last ran.

    Unlike ``AutomationCondition.eager()`` this is not limited to the latest day, so a
    corrected file for an older day refreshes that day downstream too. Days whose upstream is
    missing or still running wait. ``ignore`` lists unpartitioned dependencies (the model)
    whose updates must not re-run every day; ``blocking_checks`` also waits for the upstream's
    blocking checks to pass (a day past the reject threshold does not flow on).
    """
    updated = dg.AutomationCondition.any_deps_updated()
    if ignore:
        updated = updated.ignore(dg.AssetSelection.assets(*ignore))
    condition = (
        updated.since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    )
    if blocking_checks:
        condition = condition & dg.AutomationCondition.all_deps_blocking_checks_passed()
    return condition.with_label("refresh when an upstream day changes")
