"""The project's commands: ``demo``, ``ui`` (Dagster), ``mlflow-ui``, ``history``,
``rebuild-training-set``, ``rollback``, ``serve``, ``fetch-spark-jars``, and the streaming
ones (``kafka-local``, ``stream-setup``, ``produce``, ``consume``, ``score-stream``...)."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from pathlib import Path

from mlops_assets.settings import load_settings
from mlops_assets.stream.cli import add_stream_commands

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    """A console script of this environment (works without activating the virtualenv)."""
    script = Path(sys.prefix) / "bin" / name
    return str(script) if script.exists() else name


def _demo(args: argparse.Namespace) -> int:
    from mlops_assets.demo import DemoFailed, default_plan, run_demo, where_to_look

    settings = load_settings()
    plan = default_plan(days=args.days, start=args.start, drift_days=args.drift_days)
    try:
        outcome = run_demo(
            settings,
            plan,
            rows_per_day=args.rows_per_day,
            bad_row_share=args.bad_row_share,
            seed=args.seed,
            fmt=args.format,
            xgboost_trials=args.xgboost_trials,
            mlp_trials=args.mlp_trials,
            stream=not args.no_stream,
        )
    except DemoFailed as error:
        print(f"\nDemo failed: {error}", file=sys.stderr)
        return 1
    print(where_to_look(settings, outcome))
    return 0


def _ui(args: argparse.Namespace) -> int:
    from mlops_assets.demo import prepare_dagster_home

    settings = load_settings()
    os.environ.setdefault("MLOPS_HOME", str(settings.home_path))
    prepare_dagster_home(settings)
    command = [
        _tool("dagster"),
        "dev",
        "-w",
        str(PROJECT_ROOT / "workspace.yaml"),
        "-h",
        args.host,
        "-p",
        str(args.port),
    ]
    print(f"DAGSTER_HOME={os.environ['DAGSTER_HOME']} {' '.join(command)}", flush=True)
    os.execvp(command[0], command)


def _mlflow_ui(args: argparse.Namespace) -> int:
    settings = load_settings()
    command = [
        _tool("mlflow"),
        "ui",
        "--backend-store-uri",
        settings.resolved_mlflow_tracking_uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    print(" ".join(command), flush=True)
    os.execvp(command[0], command)


def _fetch_spark_jars(args: argparse.Namespace) -> int:
    from mlops_assets.resources.spark_jars import fetch_spark_jars

    settings = load_settings()
    try:
        jars = fetch_spark_jars(settings.spark_jars_dir)
    except RuntimeError as error:
        print(f"Could not fetch the Spark jars (Delta, S3A): {error}", file=sys.stderr)
        return 1
    print(f"Delta and S3A: {len(jars)} jars in {settings.spark_jars_dir}")
    return 0


def _history(args: argparse.Namespace) -> int:
    from mlops_assets.environment import build_resources
    from mlops_assets.tables import ALL_TABLES

    tables = {t.name: t for t in ALL_TABLES}
    if args.table not in tables:
        print(f"Unknown table {args.table!r}; one of {', '.join(tables)}", file=sys.stderr)
        return 2
    lake = build_resources(load_settings())["lake"]
    history = lake.history(tables[args.table], limit=args.limit)
    if not history:
        print(f"{args.table}: no Delta table at {lake.table_uri(tables[args.table])}")
        return 1
    print(f"{args.table} at {lake.table_uri(tables[args.table])}")
    for commit in history:
        params = commit.get("operationParameters", {})
        metrics = commit.get("operationMetrics", {})
        print(
            f"  v{commit['version']:<4} {commit['operation']:<8} "
            f"{params.get('predicate', params.get('mode', ''))!s:<60} "
            f"+{metrics.get('num_added_rows', metrics.get('numOutputRows', '?'))} rows, "
            f"files +{metrics.get('num_added_files', metrics.get('numAddedFiles', '?'))}"
            f"/-{metrics.get('num_removed_files', metrics.get('numRemovedFiles', '?'))}"
        )
    return 0


def _model_version(client: object, name: str, args: argparse.Namespace) -> str | None:
    from mlops_assets.registry.versions import current_version

    if args.version is not None:
        return str(args.version)
    version = current_version(client, name, args.alias)
    if version is None:
        print(f"No version of {name} has the alias @{args.alias}", file=sys.stderr)
    return version


def _rebuild_training_set(args: argparse.Namespace) -> int:
    from mlops_assets.environment import build_resources
    from mlops_assets.registry.rebuild import rebuild_training_set
    from mlops_assets.registry.versions import RegistryError

    settings = load_settings()
    resources = build_resources(settings)
    client = resources["mlflow_tracking"].client()
    version = _model_version(client, settings.model_name, args)
    if version is None:
        return 2
    try:
        rebuilt = rebuild_training_set(resources["lake"], client, settings.model_name, version)
    except (RegistryError, ValueError, FileNotFoundError) as error:
        print(f"Cannot rebuild the training set: {error}", file=sys.stderr)
        return 2
    print(rebuilt.report())
    if args.output:
        rebuilt.training_set.frame.to_parquet(args.output, index=False)
        print(f"  written to {args.output}")
    return 0 if rebuilt.matches else 1


def _rollback(args: argparse.Namespace) -> int:
    import dagster as dg

    from mlops_assets.definitions import ALL_ASSETS, build_definitions
    from mlops_assets.demo import prepare_dagster_home

    settings = load_settings()
    prepare_dagster_home(settings)
    defs = build_definitions()
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            ALL_ASSETS,
            selection=["champion_model"],
            resources=defs.resources,
            instance=instance,
            run_config={
                "ops": {
                    "champion_model": {
                        "config": {"rollback_to_version": args.version, "reason": args.reason}
                    }
                }
            },
            raise_on_error=False,
        )
    if not result.success:
        from mlops_assets.demo import failure_message

        print(
            f"Rollback refused (run {result.run_id}):\n{failure_message(result)}", file=sys.stderr
        )
        return 1
    event = result.asset_materializations_for_node("champion_model")[0]
    previous = event.metadata["previous_version"].value
    print(
        f"{settings.model_name} @champion: v{previous} -> v{args.version} (rollback recorded in "
        f"Dagster run {result.run_id} and on the MLflow versions)"
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from mlops_assets.logs import configure_logging
    from mlops_assets.serve.app import create_app_from_settings

    settings = load_settings()
    host = args.host or settings.serve_host
    port = args.port or settings.serve_port
    print(
        f"Serving {settings.model_name}@{settings.model_alias} on http://{host}:{port}", flush=True
    )
    # the service's own log lines (reloads, prediction-log writes) next to uvicorn's
    configure_logging(logging.INFO, settings.log_format)
    # one worker per process: each holds its own model and history snapshot
    uvicorn.run(
        create_app_from_settings(settings),
        host=host,
        port=port,
        workers=1,
        access_log=args.access_log,
    )
    return 0


def _exporter(args: argparse.Namespace) -> int:
    import logging
    import threading

    from mlops_assets.demo import prepare_dagster_home
    from mlops_assets.logs import configure_logging
    from mlops_assets.monitor.exporter import build_collector, serve
    from mlops_assets.stream.service import stop_on_signals

    settings = load_settings()
    configure_logging(logging.INFO, settings.log_format)
    if "DAGSTER_HOME" not in os.environ:
        prepare_dagster_home(settings)
    host = args.host or settings.exporter_host
    port = args.port or settings.exporter_port
    collector = build_collector(settings)
    collector.refresh(force=True)
    server = serve(collector, host, port)
    print(
        f"Exporting the pipeline of DAGSTER_HOME={os.environ['DAGSTER_HOME']} on "
        f"http://{host}:{port}/metrics",
        flush=True,
    )
    stop = threading.Event()
    stop_on_signals(stop.set)
    stop.wait()
    server.shutdown()
    return 0


def _render_monitoring(args: argparse.Namespace) -> int:
    from mlops_assets.monitor.render import ROOT, render, rendered

    changed = render()
    for path in rendered():
        state = "written" if path in changed else "unchanged"
        print(f"{path.relative_to(ROOT)}: {state}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="generate demo data and materialize the whole graph")
    demo.add_argument("--days", type=int, default=11, help="days of data (default 11)")
    demo.add_argument(
        "--start",
        type=date.fromisoformat,
        default=None,
        help="first day (default: so that the last day is yesterday, UTC)",
    )
    demo.add_argument("--rows-per-day", type=int, default=20_000)
    demo.add_argument(
        "--drift-days",
        type=int,
        default=4,
        help="how many of the last days carry the drift scenario (default 4)",
    )
    demo.add_argument(
        "--bad-row-share",
        type=float,
        default=0.01,
        help="share of contract-breaking rows per day (default 0.01)",
    )
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--format", choices=["csv", "parquet"], default="csv")
    demo.add_argument("--xgboost-trials", type=int, default=6, help="Optuna trials (default 6)")
    demo.add_argument("--mlp-trials", type=int, default=2, help="Optuna trials (default 2)")
    demo.add_argument(
        "--no-stream",
        action="store_true",
        help="deliver every day as a file (default: the last day arrives on a local Kafka)",
    )
    demo.set_defaults(handler=_demo)

    ui = commands.add_parser("ui", help="open the Dagster UI (dagster dev) on the project instance")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(handler=_ui)

    mlflow_ui = commands.add_parser("mlflow-ui", help="open the MLflow UI on the project store")
    mlflow_ui.add_argument("--host", default="127.0.0.1")
    mlflow_ui.add_argument("--port", type=int, default=5000)
    mlflow_ui.set_defaults(handler=_mlflow_ui)
    history = commands.add_parser("history", help="show a lake table's Delta commit history")
    history.add_argument("table", help="e.g. validated_transactions")
    history.add_argument("--limit", type=int, default=20)
    history.set_defaults(handler=_history)

    rebuild = commands.add_parser(
        "rebuild-training-set",
        help="rebuild a model version's exact training set (Delta time travel) and verify it",
    )
    which = rebuild.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="model version (default: the --alias one)")
    which.add_argument("--alias", default="champion", help="model alias (default champion)")
    rebuild.add_argument("--output", help="also write the rebuilt rows to this Parquet file")
    rebuild.set_defaults(handler=_rebuild_training_set)

    roll = commands.add_parser(
        "rollback", help="make an earlier champion version the champion again (recorded)"
    )
    roll.add_argument("version", type=int, help="the model version to return to")
    roll.add_argument("--reason", default="", help="why (recorded with the rollback)")
    roll.set_defaults(handler=_rollback)

    serve = commands.add_parser(
        "serve", help="serve the champion over HTTP (/predict, /predict/batch, /metrics, /docs)"
    )
    serve.add_argument("--host", help="default MLOPS_SERVE_HOST (127.0.0.1)")
    serve.add_argument("--port", type=int, help="default MLOPS_SERVE_PORT (8080)")
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (off by default: /metrics counts them)",
    )
    serve.set_defaults(handler=_serve)

    exporter = commands.add_parser(
        "exporter",
        help="serve Prometheus metrics of the Dagster instance: runs, freshness, sensors, "
        "backfills, drift share and PR-AUC per day",
    )
    exporter.add_argument("--host", help="default MLOPS_EXPORTER_HOST (127.0.0.1)")
    exporter.add_argument("--port", type=int, help="default MLOPS_EXPORTER_PORT (9110)")
    exporter.set_defaults(handler=_exporter)

    render_monitoring = commands.add_parser(
        "render-monitoring",
        help="write the Grafana dashboards' JSON and deploy/k8s/monitoring.yaml from the rules "
        "and dashboard sources",
    )
    render_monitoring.set_defaults(handler=_render_monitoring)

    jars = commands.add_parser(
        "fetch-spark-jars",
        help="fetch the Spark jars (delta-spark, hadoop-aws + AWS SDK) with Maven into the cache",
    )
    jars.set_defaults(handler=_fetch_spark_jars)
    add_stream_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
