"""The demo's console: its own progress and decisions, the libraries' output in its log.

A real Dagster instance runs a real model-factory-shaped job whose blocking gate check fails:
the demo says the decision, while the run's ``STEP_FAILURE`` / ``RUN_FAILURE`` and the check's
traceback stay in the instance (the run's page) and the demo log, never on the console.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from mlops_assets.demo import QUIET_LOGS, DemoFailed, retrain, run_page
from mlops_assets.logs import library_output_to

#: what a newcomer reads as the demo breaking
NOT_ON_THE_CONSOLE = (
    "E0000",
    "STEP_FAILURE",
    "RUN_FAILURE",
    "Traceback",
    "DagsterAssetCheckFailedError",
    "ERROR",
)
REASON = "challenger pr_auc 0.7020 < champion 0.7710 + margin 0.5000"


def factory(gate_passes: bool = False, champion_error: bool = False) -> dg.Definitions:
    """The model factory's last two steps: the gated challenger and the champion."""

    @dg.asset(
        check_specs=[dg.AssetCheckSpec("beats_champion", asset="challenger_model", blocking=True)]
    )
    def challenger_model() -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        yield dg.MaterializeResult(
            metadata={
                "model_version": 7,
                "champion_version": 6,
                "gate_decision": "passed" if gate_passes else "blocked",
                "gate_metric": "pr_auc",
                "gate_challenger_value": 0.702,
                "gate_champion_value": 0.771,
                "gate_margin": 0.5,
            }
        )
        yield dg.AssetCheckResult(
            check_name="beats_champion",
            passed=gate_passes,
            severity=dg.AssetCheckSeverity.ERROR,
            description=REASON,
        )

    @dg.asset(deps=[challenger_model])
    def champion_model() -> dg.MaterializeResult:
        if champion_error:
            raise RuntimeError("the registry is unreachable")
        return dg.MaterializeResult(metadata={"model_version": 7})

    return dg.Definitions(
        assets=[challenger_model, champion_model],
        jobs=[dg.define_asset_job("training_job")],
    )


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def retrain_quietly(defs: dg.Definitions, instance: Any, log: Path, said: list[str]) -> Any:
    request = dg.RunRequest(tags={"mlops/retrain_reason": "drift persisted 2 day(s)"})
    with library_output_to(log):
        return retrain(defs, instance, request, dict(QUIET_LOGS), said.append, log)


def assert_clean(console: str) -> None:
    for marker in NOT_ON_THE_CONSOLE:
        assert marker not in console, console


def test_a_blocked_gate_reads_as_a_decision(
    tmp_path: Path, instance: dg.DagsterInstance, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "home" / "demo.log"
    said: list[str] = []

    assets = retrain_quietly(factory(), instance, log, said)

    console = capfd.readouterr()
    assert_clean(console.out + console.err + "\n".join(said))
    (run,) = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.FAILURE  # the UI still shows the blocked run
    assert assets["challenger_model"]["gate_decision"] == "blocked"
    assert "champion_model" not in assets
    assert said[0].startswith("  retrain ") and said[0].endswith("gate blocked for v7")
    assert said[1:] == [
        "  the gate kept champion v6: v7's pr_auc 0.702 vs the champion's 0.771 + margin 0.500",
        f"    the gate's reasons, in the Dagster UI: {run_page(run.run_id)}",
    ]
    # the run's failure events are in the instance and, as Dagster's console lines, in the log
    failures = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    assert [event.step_key for event in failures] == ["challenger_model"]
    logged = log.read_text()
    assert "STEP_FAILURE" in logged and "RUN_FAILURE" in logged
    assert "DagsterAssetCheckFailedError" in logged


def test_an_unexpected_failure_is_a_clear_error_with_the_run_and_where_to_look(
    tmp_path: Path, instance: dg.DagsterInstance, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "home" / "demo.log"
    said: list[str] = []

    with pytest.raises(DemoFailed) as failed:
        retrain_quietly(factory(gate_passes=True, champion_error=True), instance, log, said)

    (run,) = instance.get_runs()
    message = str(failed.value)
    assert message.startswith(f"retraining failed (run {run.run_id}):\n")
    assert "champion_model: " in message and "the registry is unreachable" in message
    assert run_page(run.run_id) in message and str(log) in message
    assert said == []
    assert_clean(capfd.readouterr().err)  # the CLI prints the message; the traceback is logged
    assert "RuntimeError: the registry is unreachable" in log.read_text()


def test_a_blocked_decision_with_an_error_in_the_gate_step_is_a_failure(
    tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    """Only the gate's own check failing the step counts as a decision."""

    @dg.asset(
        check_specs=[dg.AssetCheckSpec("beats_champion", asset="challenger_model", blocking=True)]
    )
    def challenger_model() -> Iterator[dg.MaterializeResult]:
        yield dg.MaterializeResult(metadata={"model_version": 7, "gate_decision": "blocked"})
        raise RuntimeError("lost the MLflow connection while tagging")

    defs = dg.Definitions(assets=[challenger_model], jobs=[dg.define_asset_job("training_job")])
    with pytest.raises(DemoFailed, match="lost the MLflow connection"):
        retrain_quietly(defs, instance, tmp_path / "demo.log", [])


def test_library_output_goes_to_the_log_and_the_console_comes_back(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "logs" / "demo.log"
    with pytest.raises(ValueError, match="raised in the block"), library_output_to(log):
        print("progress", flush=True)
        # what TensorFlow's C++ logging does: write to file descriptor 2 directly
        os.write(2, b"E0000 00:00:1796322570.192028 node_def_util.cc:682] NodeDef ...\n")
        print("a Python warning", file=sys.stderr, flush=True)
        subprocess.run(  # a server the demo starts inherits descriptor 2
            [sys.executable, "-c", "import sys; sys.stderr.write('child chatter\\n')"],
            check=True,
        )
        raise ValueError("raised in the block")
    print("the failure message", file=sys.stderr, flush=True)

    console = capfd.readouterr()
    assert console.out == "progress\n"
    assert console.err == "the failure message\n"
    assert log.read_text().splitlines() == [
        "E0000 00:00:1796322570.192028 node_def_util.cc:682] NodeDef ...",
        "a Python warning",
        "child chatter",
    ]
