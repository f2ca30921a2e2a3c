"""Backfill benchmark: a year of daily files through the partitioned assets, launched as a user
launches it, and what each partition costs over the same rows landed as one day.

Set-up: ``--days`` (largest of the list, default 365) daily files of ``--rows`` generated rows
(default 10,000) land in one landing zone; a small champion (XGBoost and MLP, one trial each)
is trained on five days in a lake of its own, as ``bench/serve_bench.py`` builds its world.

Then, for each instance (``--instances sqlite,postgres``: a project-local SQLite
``DAGSTER_HOME``, then a throwaway PostgreSQL 15 server from ``mlops_assets_tests/postgres.py``)
and each size of ``--days`` (default ``30,90,365``), on a fresh lake and a fresh instance:

1. ``dagster asset materialize -m mlops_assets.definitions --select <data assets>
   --partition-range START...END`` (raw -> validated + quarantined -> features), timed wall;
2. the same command for ``scored_transactions,drift_report`` over the range;
3. the floor: the same rows (days x rows) landed as one file of one day, through the same two
   commands with ``--partition DAY`` on its own fresh lake and instance, so that
   ``range / one day`` is what the partitions themselves cost (their runs, events, commits).

Every day's materialization of every asset and every day's check result must be in the
instance: the materialization events per asset and the days whose checks have a result
(``get_asset_check_state``: succeeded or failed, not only planned or skipped) are counted
against the days.

Once (``--ui``, default the last instance at the largest size) the same backfill of all six
assets goes through the webserver's backfill API: ``dagster dev`` (webserver + daemon) over a
fresh instance, GraphQL ``launchPartitionBackfill``, timed from the launch to the backfill's
completion.

Stage seconds are each step's STEP_START..STEP_SUCCESS from the run's events; "start" is the
process start before a step (STEP_WORKER_STARTING..STEP_START, the multiprocess executor's
cost). Targets (issue 16): the data assets of 365 days in under 3 minutes wall, and within 2x of
the same rows as one day. Usage: ``.venv/bin/python bench/backfill_year.py [--days 30,90,365]
[--rows 10000] [--instances sqlite,postgres] [--ui postgres|sqlite|none] [--skip-score]
[--strict]``; develop with ``--days 5 --rows 2000 --instances sqlite --ui none``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from data_day import step_seconds  # bench/ is on the path: this script runs from it
from import_and_run import bytecode_modes

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START = date(2025, 1, 1)
#: the day the floors land on: after the longest range, before today
FLOOR_DAY = date(2026, 2, 2)
DATA_ASSETS = (
    "raw_transactions",
    "validated_transactions",
    "quarantined_transactions",
    "transaction_features",
)
SCORE_ASSETS = ("scored_transactions", "drift_report")
#: the steps of the runs (the validated multi-asset is one step for two assets)
DATA_STEPS = ("raw_transactions", "validated_transactions", "transaction_features")
SCORE_STEPS = SCORE_ASSETS
WALL_TARGET_SECONDS = 180.0
RATIO_TARGET = 2.0
TRAIN_DAYS = 5


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


@dataclass
class Launch:
    """One launched run (or backfill) and what the instance recorded of it."""

    wall: float
    steps: dict[str, float] = field(default_factory=dict)
    starts: dict[str, float] = field(default_factory=dict)
    events: int = 0
    runs: int = 1


@dataclass
class Case:
    """One size on one instance: the range, its floor, and their figures."""

    instance: str
    days: int
    data: Launch | None = None
    score: Launch | None = None
    floor_data: Launch | None = None
    floor_score: Launch | None = None
    noop: Launch | None = None
    noop_floor: Launch | None = None
    recorded: dict[str, int] = field(default_factory=dict)


# --- the world ------------------------------------------------------------------------------


def base_env(work: Path) -> dict[str, str]:
    """The environment every command runs in: the project home, automation off, the default
    (multiprocess) executor, and a bytecode cache as the image and a laptop have."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLOPS_", "DAGSTER_")) or k == "DAGSTER_EVENT_BATCH_SIZE"
    }
    env.update(
        MLOPS_HOME=str(work / "home"),
        MLOPS_PARTITIONS_START=START.isoformat(),
        MLOPS_PAYSIM_EPOCH=START.isoformat(),
        MLOPS_AUTOMATION_ENABLED="false",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    return bytecode_modes(env, work)["cached"]


def land_days(landing: Path, days: int, rows: int) -> None:
    from mlops_assets.datagen import GeneratorConfig, write_day

    config = GeneratorConfig(rows_per_day=rows, seed=7, epoch=START)
    began = time.perf_counter()
    for i in range(days):
        write_day(START + timedelta(days=i), config, landing)
        if (i + 1) % 60 == 0 or i + 1 == days:
            say(f"  landed {i + 1}/{days} days ({time.perf_counter() - began:.0f}s)")


def land_floor(landing: Path, rows: int) -> None:
    from mlops_assets.datagen import GeneratorConfig, write_day

    write_day(FLOOR_DAY, GeneratorConfig(rows_per_day=rows, seed=7, epoch=START), landing)


def train_champion(env: dict[str, str], work: Path) -> None:
    """Ingest the first days into a lake of their own, train, put ``champion`` on XGBoost."""
    import dagster as dg

    from mlops_assets.environment import build_resources
    from mlops_assets.settings import Settings
    from mlops_assets_tests.pipeline import INGEST, TRAIN, materialize, training_config

    os.environ.update({k: env[k] for k in env if k.startswith("MLOPS_")})
    os.environ["MLOPS_LAKE_URI"] = str(work / "lakes" / "train")
    settings = Settings()
    resources = build_resources(settings)
    instance = dg.DagsterInstance.ephemeral()
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    days = [START + timedelta(days=i) for i in range(TRAIN_DAYS)]
    for day in days:
        assert materialize(INGEST, resources, instance, day, run_config=quiet).success, day
    config = training_config(TRAIN_DAYS - 1, days[-1], trials=1) | quiet
    assert materialize(TRAIN, resources, instance, run_config=config).success
    client = resources["mlflow_tracking"].client()
    versions = client.search_model_versions(f"name='{settings.model_name}'")
    xgboost = max(
        (v for v in versions if v.tags.get("model_family") == "xgboost"),
        key=lambda v: int(v.version),
    )
    client.set_registered_model_alias(settings.model_name, "champion", xgboost.version)
    del os.environ["MLOPS_LAKE_URI"]


def instance_env(env: dict[str, str], home: Path, lake: Path, landing: Path, url: str | None):
    """``env`` with a fresh DAGSTER_HOME (SQLite, or Postgres at ``url``) and that lake."""
    home.mkdir(parents=True)
    yaml = "telemetry:\n  enabled: false\n"
    if url:
        yaml += f"storage:\n  postgres:\n    postgres_url: {url}\n"
    (home / "dagster.yaml").write_text(yaml)
    return env | {
        "DAGSTER_HOME": str(home),
        "MLOPS_LAKE_URI": str(lake),
        "MLOPS_LANDING_URI": str(landing),
    }


@contextmanager
def instance_urls(kinds: list[str]) -> Iterator[Any]:
    """Yields a function ``name -> database URL`` (None for SQLite) for each kind."""
    if "postgres" not in kinds:
        yield lambda kind, name: None
        return
    from mlops_assets_tests.postgres import running_postgres_server

    with running_postgres_server() as server:
        say(f"PostgreSQL {server.version} on port {server.port}")
        yield lambda kind, name: server.create_database(name) if kind == "postgres" else None


# --- launching ------------------------------------------------------------------------------


def run_cli(
    env: dict[str, str],
    assets: tuple[str, ...],
    partitions: list[str],
    log: Path,
    location: Sequence[str] = ("-m", "mlops_assets.definitions"),
) -> float:
    """``dagster asset materialize`` as a user types it; wall seconds (fails loudly)."""
    command = [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        *location,
        "--select",
        ",".join(assets),
        *partitions,
    ]
    began = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        next_note = began + 30
        while process.poll() is None:
            time.sleep(0.5)
            if time.perf_counter() > next_note:
                next_note += 30
                done = log.read_text(errors="replace").count("STEP_SUCCESS")
                say(f"    ... {time.perf_counter() - began:.0f}s, {done} step(s) done")
    wall = time.perf_counter() - began
    text = log.read_text(errors="replace")
    if process.returncode != 0 or "RUN_SUCCESS" not in text:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{text[-4000:]}")
    return wall


def run_figures(dagster_home: str, wall: float, run_ids: list[str] | None = None) -> Launch:
    """Step seconds, process starts and event counts of the runs (default: the latest)."""
    import dagster as dg

    with dg.DagsterInstance.from_config(dagster_home) as instance:
        ids = run_ids or [instance.get_runs(limit=1)[0].run_id]
        launch = Launch(wall=wall, runs=len(ids))
        for run_id in ids:
            for step, seconds in step_seconds(instance, run_id).items():
                launch.steps[step] = launch.steps.get(step, 0.0) + seconds
            for step, seconds in step_seconds(
                instance, run_id, "STEP_WORKER_STARTING", "STEP_START"
            ).items():
                launch.starts[step] = launch.starts.get(step, 0.0) + seconds
            launch.events += len(instance.all_logs(run_id))
    return launch


def recorded(dagster_home: str, keys: tuple[str, ...]) -> dict[str, int]:
    """Per asset, its materialization events; per check, the days with a result (passed or
    failed) for their latest materialization, as the UI's partition view shows them."""
    import dagster as dg
    from dagster._core.storage.asset_check_execution_record import (
        AssetCheckExecutionResolvedStatus as Status,
    )

    from mlops_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    counts: dict[str, int] = {}
    with dg.DagsterInstance.from_config(dagster_home) as instance:
        for key in keys:
            asset_key = dg.AssetKey(key)
            records = instance.fetch_materializations(asset_key, limit=10_000).records
            counts[key] = len(records)
            check_keys = graph.get(asset_key).check_keys
            if not check_keys:
                continue
            partitions_def = graph.get(asset_key).partitions_def
            states = instance.event_log_storage.get_asset_check_state(
                [(check_key, partitions_def) for check_key in sorted(check_keys, key=str)]
            )
            for check_key, state in states.items():
                counts[f"{key}:{check_key.name}"] = sum(
                    state.subsets[status].size
                    for status in (Status.SUCCEEDED, Status.FAILED)
                    if status in state.subsets
                )
    return counts


def day_range(days: int) -> list[str]:
    end = START + timedelta(days=days - 1)
    return ["--partition-range", f"{START.isoformat()}...{end.isoformat()}"]


def run_case(case: Case, env: dict[str, str], work: Path, url_for: Any, skip_score: bool) -> None:
    """The range through the CLI, then its floor (the same rows as one day)."""
    name = f"{case.instance}_{case.days}"
    landing = work / "home" / "landing"
    run_env = instance_env(
        env, work / "instances" / name, work / "lakes" / name, landing, url_for(case.instance, name)
    )
    logs = work / "logs"
    say(f"{case.instance}, {case.days} days: data assets over the range ...")
    wall = run_cli(run_env, DATA_ASSETS, day_range(case.days), logs / f"{name}_data.log")
    case.data = run_figures(run_env["DAGSTER_HOME"], wall)
    say(f"  data assets {wall:.1f}s wall")
    if not skip_score:
        say(f"{case.instance}, {case.days} days: scores and drift over the range ...")
        wall = run_cli(run_env, SCORE_ASSETS, day_range(case.days), logs / f"{name}_score.log")
        case.score = run_figures(run_env["DAGSTER_HOME"], wall)
        say(f"  scores and drift {wall:.1f}s wall")
    case.recorded = recorded(
        run_env["DAGSTER_HOME"], DATA_ASSETS + (() if skip_score else SCORE_ASSETS)
    )

    floor_landing = work / "floor-landing" / str(case.days)
    if not floor_landing.exists():
        land_floor(floor_landing, case.days * ROWS[0])
    floor_env = instance_env(
        env,
        work / "instances" / f"{name}_floor",
        work / "lakes" / f"{name}_floor",
        floor_landing,
        url_for(case.instance, f"{name}_floor"),
    )
    rows = case.days * ROWS[0]
    say(f"{case.instance}: the floor, {rows:,} rows as one day ({FLOOR_DAY}) ...")
    one_day = ["--partition", FLOOR_DAY.isoformat()]
    wall = run_cli(floor_env, DATA_ASSETS, one_day, logs / f"{name}_floor_data.log")
    case.floor_data = run_figures(floor_env["DAGSTER_HOME"], wall)
    say(f"  data assets {wall:.1f}s wall")
    if not skip_score:
        wall = run_cli(floor_env, SCORE_ASSETS, one_day, logs / f"{name}_floor_score.log")
        case.floor_score = run_figures(floor_env["DAGSTER_HOME"], wall)
        say(f"  scores and drift {wall:.1f}s wall")

    # Dagster's own share: assets of the same shape doing nothing, over the range and one day
    noop = ["-f", str(ROOT / "bench" / "noop_location.py")]
    for label, partitions in (("noop", day_range(case.days)), ("noop_floor", one_day)):
        noop_env = instance_env(
            env,
            work / "instances" / f"{name}_{label}",
            work / "lakes" / f"{name}_{label}",
            landing,
            url_for(case.instance, f"{name}_{label}"),
        )
        wall = run_cli(noop_env, DATA_ASSETS, partitions, logs / f"{name}_{label}.log", noop)
        setattr(case, label, run_figures(noop_env["DAGSTER_HOME"], wall))
    assert case.noop and case.noop_floor
    say(
        f"  Dagster alone (no-op assets of the same shape): range {case.noop.wall:.1f}s, "
        f"one day {case.noop_floor.wall:.1f}s"
    )


#: rows per day, set from the arguments (the floor lands days x rows)
ROWS = [10_000]


# --- the webserver's backfill API -----------------------------------------------------------

LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { runId status } }
  }
}"""
DEV_COMMAND = [str(BIN / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1"]
DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def ui_backfill(case: Case, env: dict[str, str], work: Path, url_for: Any, assets: tuple) -> None:
    """The range through ``launchPartitionBackfill`` against ``dagster dev``."""
    from mlops_assets_tests.helpers import free_port, graphql

    name = f"{case.instance}_{case.days}_ui"
    run_env = instance_env(
        env,
        work / "instances" / name,
        work / "lakes" / name,
        work / "home" / "landing",
        url_for(case.instance, name),
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(work / "logs" / f"{name}.log", "w") as log:
        server = subprocess.Popen(
            [*DEV_COMMAND, "-p", str(port)],
            cwd=ROOT,
            env=run_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        say(f"{case.instance}, {case.days} days through the webserver: starting dagster dev ...")
        deadline = time.monotonic() + 300
        while True:
            try:
                graphql(url, "{ version }")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("dagster dev did not start: see " + log.name) from None
                time.sleep(1)
        partitions = [(START + timedelta(days=i)).isoformat() for i in range(case.days)]
        params = {"assetSelection": [{"path": [k]} for k in assets], "partitionNames": partitions}
        began = time.perf_counter()
        launched = graphql(url, LAUNCH, {"params": params})["launchPartitionBackfill"]
        next_note = began + 30
        if launched["__typename"] != "LaunchBackfillSuccess":
            raise SystemExit(f"launchPartitionBackfill: {launched}")
        backfill_id = launched["backfillId"]
        say(f"  launched backfill {backfill_id}")
        while True:
            state = graphql(url, STATUS, {"id": backfill_id})
            status = state["partitionBackfillOrError"]["status"]
            if status in DONE:
                break
            if time.perf_counter() > next_note:
                next_note += 30
                runs = state["runsOrError"]["results"]
                say(f"    ... {time.perf_counter() - began:.0f}s, {status}, {len(runs)} run(s)")
            time.sleep(2)
        wall = time.perf_counter() - began
        runs = state["runsOrError"]["results"]
        if status not in ("COMPLETED", "COMPLETED_SUCCESS") or any(
            r["status"] != "SUCCESS" for r in runs
        ):
            raise SystemExit(f"backfill {backfill_id} ended {status}: {runs}")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=120)
    case.data = run_figures(run_env["DAGSTER_HOME"], wall, [r["runId"] for r in runs])
    case.recorded = recorded(run_env["DAGSTER_HOME"], assets)
    say(f"  backfill done in {wall:.1f}s over {len(runs)} run(s)")


# --- the report -----------------------------------------------------------------------------


def summarize(case: Case) -> None:
    """One line per launch as soon as a case is done (the table comes at the end)."""
    for label, launch in (
        ("range", case.data),
        ("range scores", case.score),
        ("one day", case.floor_data),
        ("one day scores", case.floor_score),
        ("no-op range", case.noop),
        ("no-op one day", case.noop_floor),
    ):
        if launch:
            steps = ", ".join(f"{k} {v:.1f}" for k, v in launch.steps.items())
            print(
                f"    {case.instance} {case.days} {label}: {launch.wall:.1f}s wall, "
                f"{launch.events} events; steps {steps}; starts {sum(launch.starts.values()):.1f}",
                flush=True,
            )


def report(cases: list[Case], ui: Case | None, rows: int) -> dict[str, bool]:
    targets: dict[str, bool] = {}
    print()
    header = (
        f"{'instance':<9}{'days':>5}{'rows':>11}"
        + "".join(f"{s.split('_')[0][:9]:>10}" for s in DATA_STEPS)
        + f"{'starts':>8}{'events':>8}{'wall':>8}{'1 day':>8}{'ratio':>7}{'s/day':>7}"
    )
    print("data assets (raw -> validated + quarantined -> features), seconds")
    print(header)
    for case in cases:
        assert case.data and case.floor_data
        d, f = case.data, case.floor_data
        print(
            f"{case.instance:<9}{case.days:>5}{case.days * rows:>11,}"
            + "".join(f"{d.steps.get(s, 0.0):>10.2f}" for s in DATA_STEPS)
            + f"{sum(d.starts.values()):>8.1f}{d.events:>8}{d.wall:>8.1f}{f.wall:>8.1f}"
            + f"{d.wall / f.wall:>7.2f}{d.wall / case.days:>7.2f}"
        )
        print(
            f"{'  1 day':<9}{'':>5}{case.days * rows:>11,}"
            + "".join(f"{f.steps.get(s, 0.0):>10.2f}" for s in DATA_STEPS)
            + f"{sum(f.starts.values()):>8.1f}{f.events:>8}{f.wall:>8.1f}"
        )
    print()
    print(
        "Dagster's own share: the same CLI runs of no-op assets of the same shape (its run, "
        "step processes, planned and recorded events per partition)"
    )
    print(
        f"{'instance':<9}{'days':>5}{'no-op range':>13}{'no-op 1 day':>13}{'per day':>9}"
        f"{'data range':>12}{'minus no-op':>13}{'1 day minus':>13}{'ratio':>7}"
    )
    for case in cases:
        if not (case.noop and case.noop_floor and case.data and case.floor_data):
            continue
        per_day = (case.noop.wall - case.noop_floor.wall) / max(case.days - 1, 1)
        own = case.data.wall - case.noop.wall
        own_floor = case.floor_data.wall - case.noop_floor.wall
        print(
            f"{case.instance:<9}{case.days:>5}{case.noop.wall:>13.1f}{case.noop_floor.wall:>13.1f}"
            f"{per_day:>9.3f}{case.data.wall:>12.1f}{own:>13.1f}{own_floor:>13.1f}"
            f"{own / own_floor if own_floor > 0 else float('nan'):>7.2f}"
        )
    scored = [c for c in cases if c.score and c.floor_score]
    if scored:
        print()
        print("scores and drift, seconds")
        print(
            f"{'instance':<9}{'days':>5}{'scores':>9}{'drift':>9}{'wall':>8}"
            f"{'1 day':>8}{'scores 1d':>10}{'drift 1d':>9}{'ratio':>7}{'drift/day':>10}"
        )
        for case in scored:
            s, f = case.score, case.floor_score
            assert s and f
            print(
                f"{case.instance:<9}{case.days:>5}{s.steps.get('scored_transactions', 0):>9.2f}"
                f"{s.steps.get('drift_report', 0):>9.2f}{s.wall:>8.1f}{f.wall:>8.1f}"
                f"{f.steps.get('scored_transactions', 0):>10.2f}"
                f"{f.steps.get('drift_report', 0):>9.2f}{s.wall / f.wall:>7.2f}"
                f"{s.steps.get('drift_report', 0) / case.days:>10.2f}"
            )
    by_instance: dict[str, list[Case]] = {}
    for case in cases:
        by_instance.setdefault(case.instance, []).append(case)
    print()
    for kind, runs in by_instance.items():
        smallest = runs[0]
        assert smallest.data
        growth = ", ".join(
            f"{c.days} days {c.data.wall:.1f}s (x{c.data.wall / smallest.data.wall:.2f} for "
            f"x{c.days / smallest.days:.1f} the days)"
            for c in runs
            if c.data
        )
        print(f"growth, {kind}: {growth}")
    print()
    print("recorded in the instance (count per asset and per check == days):")
    for case in [*cases, *([ui] if ui else [])]:
        short = {
            k.replace("_transactions", "").replace("_transaction", ""): v
            for k, v in case.recorded.items()
        }
        # a backfill through the daemon also rebuilds the day after the range downstream of
        # the features' 24-hour look-back (it has no rows yet): at least every day of the range
        complete = all(v >= case.days for v in case.recorded.values())
        label = f"{case.instance} {case.days}{' (webserver)' if case is ui else ''}"
        print(f"  {label}: {'complete' if complete else 'MISSING'} {short}")
        targets[f"every day recorded, {label}"] = complete
    if ui and ui.data:
        print()
        d = ui.data
        assets = sum(":" not in key for key in ui.recorded)
        print(
            f"webserver backfill, {ui.instance}, {ui.days} days, {assets} assets: {d.wall:.1f}s "
            f"from launch to completion over {d.runs} run(s); steps "
            + ", ".join(f"{k} {v:.1f}s" for k, v in d.steps.items())
        )
    largest = {kind: runs[-1] for kind, runs in by_instance.items()}
    for kind, case in largest.items():
        assert case.data and case.floor_data
        targets[f"{kind}: data assets of {case.days} days under {WALL_TARGET_SECONDS:.0f} s"] = (
            case.data.wall < WALL_TARGET_SECONDS
        )
        targets[f"{kind}: {case.days} days within {RATIO_TARGET:.0f}x of one day"] = (
            case.data.wall <= RATIO_TARGET * case.floor_data.wall
        )
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", default="30,90,365", help="range sizes, comma-separated")
    parser.add_argument("--rows", type=int, default=10_000, help="rows of each daily file")
    parser.add_argument("--instances", default="sqlite,postgres", help="sqlite and/or postgres")
    parser.add_argument(
        "--ui",
        default=None,
        help="instance of the one webserver backfill (default: the last "
        "of --instances; none: skip it)",
    )
    parser.add_argument("--skip-score", action="store_true", help="only the data assets")
    parser.add_argument(
        "--score-on",
        default=None,
        help="instances whose ranges are also scored and reported for drift (default: all of "
        "--instances; the webserver backfill always includes them unless --skip-score)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    sizes = sorted(int(d) for d in args.days.split(","))
    kinds = [k.strip() for k in args.instances.split(",") if k.strip()]
    ui_kind = args.ui or kinds[-1]
    score_on = [k.strip() for k in (args.score_on or args.instances).split(",")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    ROWS[0] = args.rows
    if START + timedelta(days=sizes[-1]) > FLOOR_DAY:
        raise SystemExit(f"at most {(FLOOR_DAY - START).days} days")

    work = Path(tempfile.mkdtemp(prefix="mlops-backfill-bench-"))
    (work / "logs").mkdir()
    env = base_env(work)
    os.environ.update({k: v for k, v in env.items() if k.startswith("MLOPS_")})
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the champion's training, quieter
    say(f"work directory {work}")
    cases: list[Case] = []
    ui: Case | None = None
    try:
        landed = max(sizes[-1], TRAIN_DAYS)
        say(f"Landing {landed} days of {args.rows:,} rows ...")
        land_days(work / "home" / "landing", landed, args.rows)
        if not args.skip_score:
            say(f"Training a champion on {TRAIN_DAYS} days ...")
            train_champion(env, work)
        with instance_urls(kinds) as url_for:
            for kind in kinds:
                for days in sizes:
                    case = Case(kind, days)
                    run_case(case, env, work, url_for, args.skip_score or kind not in score_on)
                    cases.append(case)
                    summarize(case)
            if ui_kind != "none":
                ui = Case(ui_kind, sizes[-1])
                assets = DATA_ASSETS + (() if args.skip_score else SCORE_ASSETS)
                ui_backfill(ui, env, work, url_for, assets)
        targets = report(cases, ui, args.rows)
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    for target, met in targets.items():
        print(f"  {'PASS' if met else 'MISS'}  {target}")
    return 0 if all(targets.values()) or not args.strict else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
