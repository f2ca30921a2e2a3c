"""Screenshots of the Dagster and MLflow UIs for docs/analyst.md (run by `scripts/screenshots`).

Uses the demo's project home (MLOPS_HOME, default ./.mlops) and runs the demo first when its
Dagster instance has no runs; starts `dagster dev` and `mlflow server` over it on free loopback
ports; drives headless Chromium with the browser tests' own helpers
(mlops_assets_tests/browser.py); saves 1280x800 PNGs into docs/images/. It only looks: the
dialogs it opens (a 7-day backfill, the launchpad) are screenshotted and cancelled, so the
demo's instance is left as it was.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlops_assets_tests import browser  # noqa: E402
from mlops_assets_tests.helpers import free_port  # noqa: E402
from mlops_assets_tests.mlflow_server import running_mlflow_server  # noqa: E402


def _has_runs(dagster_home: Path) -> bool:
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    if not (dagster_home / "history").exists():
        return False
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster_home))) as instance:
        return bool(instance.get_runs(limit=1))


def _latest_partition(dagster_home: Path, key: str) -> str:
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(dagster_home))) as instance:
        return max(instance.get_materialized_partitions(dg.AssetKey(key)))


def _champion(mlflow_uri: str, name: str) -> int:
    from mlflow import MlflowClient

    return int(
        MlflowClient(tracking_uri=mlflow_uri).get_model_version_by_alias(name, "champion").version
    )


def take(page: Any, out: Path, name: str, said: list[str]) -> None:
    path = out / f"{name}.png"
    page.screenshot(path=str(path))
    said.append(str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path))
    print(f"  {said[-1]}", flush=True)


def screenshots(dagster: str, mlflow: str, model: str, out: Path, dagster_home: Path) -> list[str]:
    said: list[str] = []
    with browser.chromium() as context:
        page = context.new_page()
        browser.open_asset_graph(page, dagster)
        take(page, out, "asset-graph", said)
        browser.open_group(page, dagster, "validate")
        take(page, out, "group-validate", said)

        browser.open_asset(page, dagster, "validated_transactions")
        page.get_by_text("Metadata", exact=True).first.scroll_into_view_if_needed()
        take(page, out, "asset-metadata", said)
        browser.open_asset(page, dagster, "validated_transactions", view="checks")
        page.get_by_text("reject_share_within_threshold").first.wait_for()
        take(page, out, "asset-checks", said)

        latest = _latest_partition(dagster_home, "validated_transactions")
        dialog = browser.open_partition_dialog(page, dagster, "validated_transactions")
        first = _days_before(latest, 6)
        browser.select_partitions(dialog, f"[{first}...{latest}]")
        dialog.get_by_text("7 partitions", exact=True).wait_for()
        take(page, out, "backfill-dialog", said)
        page.keyboard.press("Escape")  # cancel: nothing is launched

        browser.open_launchpad(page, dagster, "training_job")
        take(page, out, "launchpad", said)

        browser.open_asset(page, dagster, "drift_report")
        page.get_by_text("drift_share", exact=True).first.scroll_into_view_if_needed()
        take(page, out, "drift-asset", said)
        browser.open_asset(page, dagster, "drift_report", view="checks")
        page.get_by_text("drift_share_within_threshold").first.wait_for()
        take(page, out, "drift-check", said)
        report = page.locator("a[href^='file://'][href$='.html']")
        browser.open_asset(page, dagster, "drift_report")
        report.first.wait_for()
        browser.open_drift_report(page, str(report.first.get_attribute("href")))
        take(page, out, "drift-report", said)

        browser.open_mlflow_model(page, mlflow, model)
        take(page, out, "mlflow-model", said)
        browser.open_mlflow_model(page, mlflow, model, _champion(mlflow, model))
        page.get_by_text("lineage.dagster_run_id", exact=True).first.scroll_into_view_if_needed()
        take(page, out, "mlflow-lineage", said)
    return said


def _days_before(day: str, days: int) -> str:
    from datetime import date, timedelta

    return (date.fromisoformat(day) - timedelta(days=days)).isoformat()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument(
        "--demo-args",
        default="",
        help="arguments for the demo when it has to run first (default: its own defaults)",
    )
    args = parser.parse_args(argv)

    from mlops_assets.settings import load_settings

    settings = load_settings()
    home = settings.home_path.resolve()
    dagster_home = browser.prepare_dagster_home(home)
    if not _has_runs(dagster_home):
        print(f"No demo runs in {dagster_home}: running the demo first", flush=True)
        env = {**os.environ, "MLOPS_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}
        command = [sys.executable, "-m", "mlops_assets.cli", "demo", *args.demo_args.split()]
        subprocess.run(command, cwd=ROOT, env=env, check=True)
    args.out.mkdir(parents=True, exist_ok=True)
    work = home / "screenshots"
    port = free_port()
    print(f"Starting the MLflow UI and dagster dev over {home}", flush=True)
    with running_mlflow_server(
        work,
        backend_store_uri=settings.resolved_mlflow_tracking_uri,
        artifacts_destination=settings.resolved_mlflow_artifact_uri,
    ) as mlflow:
        env = browser.ui_environment(home, mlflow_ui_url=mlflow.uri)
        with browser.running_dagster_dev(env, port, work / "dagster-dev.log") as dev:
            dagster = dev.wait_loaded()
            print(f"Screenshots of {dagster} and {mlflow.uri} into {args.out}:", flush=True)
            screenshots(dagster, mlflow.uri, settings.model_name, args.out, dagster_home)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
