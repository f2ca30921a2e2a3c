"""The code location's default executor (``deployment.preloading_executor``), in real runs of a
real instance: multiprocess steps forked from a server that has imported the code location and
the data libraries, a fork server per run (a second run in the same process sees its own
environment), and the run config's choices (in process, a start method, max_concurrent) kept.

This module does not import ``mlops_assets.definitions``: a step that finds it imported got it
from the fork server's preload."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from mlops_assets.deployment import FORKSERVER_PRELOAD, executor_for, multiprocess_config
from mlops_assets.settings import Settings


def _probe() -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={
            "pid": os.getpid(),
            "parent_pid": os.getppid(),
            "home": os.environ.get("MLOPS_HOME", ""),
            "preloaded": all(module in sys.modules for module in FORKSERVER_PRELOAD),
        }
    )


@dg.asset(name="first_probe")
def first_probe() -> dg.MaterializeResult:
    """Where its step ran."""
    return _probe()


@dg.asset(name="second_probe", deps=[first_probe])
def second_probe() -> dg.MaterializeResult:
    """Where its step ran."""
    return _probe()


def probe_job() -> dg.JobDefinition:
    """Rebuilt in every step process (``dg.reconstructable``) with the code location's executor."""
    return dg.Definitions(
        assets=[first_probe, second_probe],
        jobs=[dg.define_asset_job("probes")],
        executor=executor_for(Settings()),
    ).resolve_job_def("probes")


def run_probes(instance: dg.DagsterInstance, execution: dict[str, Any] | None = None) -> list[Any]:
    result = dg.execute_job(
        dg.reconstructable(probe_job),
        instance=instance,
        run_config={"execution": {"config": execution}} if execution else None,
    )
    assert result.success
    return [
        {name: value.value for name, value in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    ]


def test_steps_fork_from_a_preloaded_server_one_per_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "first"))
        first = run_probes(instance)
        monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "second"))
        second = run_probes(instance)
    for run, home in ((first, "first"), (second, "second")):
        assert len(run) == 2
        # each step in a process of its own, forked by the fork server (not by this process)
        assert len({step["pid"] for step in run}) == 2 and os.getpid() not in {
            step["pid"] for step in run
        }
        assert {step["parent_pid"] for step in run} != {os.getpid()}
        assert len({step["parent_pid"] for step in run}) == 1
        assert all(step["preloaded"] for step in run), run
        # the run's own environment: the first run's fork server did not outlive it
        assert {step["home"] for step in run} == {str(tmp_path / home)}
    assert first[0]["parent_pid"] != second[0]["parent_pid"]


def test_the_run_config_still_chooses(tmp_path: Path) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        in_process = run_probes(instance, {"in_process": {}})
    assert {step["pid"] for step in in_process} == {os.getpid()}
    # a start method the run asks for is kept (bench/import_and_run.py runs Dagster's spawn);
    # max_concurrent and the rest pass through
    asked = {"multiprocess": {"max_concurrent": 1, "start_method": {"spawn": {}}}}
    assert multiprocess_config(asked) == asked
    default = multiprocess_config({"multiprocess": {"max_concurrent": 2}})["multiprocess"]
    assert default["max_concurrent"] == 2
    assert default["start_method"] == {"forkserver": {"preload_modules": list(FORKSERVER_PRELOAD)}}
    assert multiprocess_config({"in_process": {}}) == {"in_process": {}}
