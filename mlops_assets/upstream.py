"""What an unpartitioned upstream asset recorded: its latest materialization's metadata.

The model assets pass small facts (a training-set spec, best parameters, a model version) from
step to step through the Dagster instance, which every executor shares, rather than through
files on one machine.
"""

from __future__ import annotations

from typing import Any

import dagster as dg


def latest_metadata(context: dg.AssetExecutionContext, key: str) -> dict[str, Any]:
    """The metadata values of ``key``'s latest materialization; a clear failure if none."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(key))
    if event is None or event.asset_materialization is None:
        raise dg.Failure(
            description=f"{key} has never been materialized; materialize it first "
            "(training_job runs the whole model factory)"
        )
    return {name: value.value for name, value in event.asset_materialization.metadata.items()}
