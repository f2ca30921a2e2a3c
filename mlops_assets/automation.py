"""When assets refresh on their own, and how fresh the daily assets must be."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

#: A daily asset should have yesterday's partition within 36 hours of the day's start.
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=36), warn_window=timedelta(hours=30)
)


def refresh_when_upstream_day_changes(ignore: tuple[str, ...] = ()) -> dg.AutomationCondition:
    """Materialize a day when an upstream partition it reads was updated since it last ran.

    Unlike ``AutomationCondition.eager()`` this is not limited to the latest day, so a
    corrected file for an older day refreshes that day downstream too. Days whose upstream is
    missing, failed its latest run (a bad delivery, a day past the reject threshold) or is still
    running wait; a successful re-run upstream releases them. ``ignore`` lists unpartitioned
    dependencies (the model) whose updates must not re-run every day.
    """
    updated = dg.AutomationCondition.any_deps_updated()
    if ignore:
        updated = updated.ignore(dg.AssetSelection.assets(*ignore))
    condition = (
        updated.since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_match(dg.AutomationCondition.execution_failed())
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    )
    return condition.with_label("refresh when an upstream day changes")
