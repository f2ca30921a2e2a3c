"""Small values passed between the ops of a graph-backed asset through the Dagster instance.

Ops hand each other values through an IO manager. Dagster's default keeps them in files of the
local ``DAGSTER_HOME``, which another step pod cannot read; the model assets keep their small
facts in the instance instead (``upstream.py``), which every executor shares. This IO manager
does the same for op outputs: the value (JSON) is the metadata of the producing step's
``HANDLED_OUTPUT`` event, and an input reads it back from the event log of the run that produced
it (a re-execution reads its parent run's). For values of a few kilobytes only (a plan, a
report), never data.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

VALUE_KEY = "value"


class EventLogIOManager(dg.ConfigurableIOManager):
    """JSON values kept as output metadata in the run's event log (shared by every step)."""

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        context.add_output_metadata(
            {VALUE_KEY: dg.MetadataValue.json({"mapping_key": context.mapping_key, "value": obj})}
        )

    def load_input(self, context: dg.InputContext) -> Any:
        upstream = context.upstream_output
        if upstream is None:
            raise dg.Failure(description=f"Input {context.name} has no upstream output to read")
        records = context.instance.get_records_for_run(
            upstream.run_id, of_type=dg.DagsterEventType.HANDLED_OUTPUT
        ).records
        for record in records:
            entry = record.event_log_entry
            event = entry.dagster_event
            if entry.step_key != upstream.step_key or event is None:
                continue
            data = event.event_specific_data
            if data is None or data.output_name != upstream.name:
                continue
            stored = data.metadata.get(VALUE_KEY)
            if stored is not None and stored.value.get("mapping_key") == upstream.mapping_key:
                return stored.value["value"]
        raise dg.Failure(
            description=f"No value of output {upstream.name!r} (mapping key "
            f"{upstream.mapping_key}) of step {upstream.step_key} in the event log of run "
            f"{upstream.run_id}"
        )
