"""The Dagster and MLflow UIs in a real headless Chromium, driven by Playwright for Python: the
helpers shared by the browser tests (test_browser_ui.py) and `scripts/screenshots`.

Chromium is Debian's (scripts/ensure_chromium.sh), never a Playwright browser download, and it
starts with the flags that keep it off the network it cannot reach (no background networking,
component updates, sync or QUIC) and a fresh profile. `dagster dev` (webserver + daemon) runs
as a subprocess over a project home on loopback; the MLflow UI is `mlflow server` on the same
store (mlflow_server.py). As a pytest plugin (conftest.py) the module saves a full-page
screenshot of any failing test's `page` into `.pytest-artifacts/` and names it in the report.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlops_assets_tests.helpers import graphql
from mlops_assets_tests.mlflow_server import stop_process_group

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ARTIFACTS = PROJECT_ROOT / ".pytest-artifacts"
VIEWPORT = {"width": 1280, "height": 800}
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: The Dagster UI's first-visit "join the community" dialog, marked as seen before any page
SKIP_FIRST_VISIT = "window.localStorage.setItem('communityNux', '\"1\"');"
LOCATION = "mlops_assets"
TIMEOUT_MS = 60_000


def chromium_path() -> str:
    """The Chromium binary: $MLOPS_CHROMIUM, else chromium / chromium-browser on PATH."""
    explicit = os.environ.get("MLOPS_CHROMIUM")
    found = explicit or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found or not Path(found).exists():
        raise RuntimeError("no Chromium: run scripts/ensure_chromium.sh or set MLOPS_CHROMIUM")
    return found


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``) with a fresh profile, closed afterwards."""
    from playwright.sync_api import sync_playwright

    with (
        tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile,
        sync_playwright() as playwright,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=chromium_path(),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport=VIEWPORT,
        )
        context.add_init_script(SKIP_FIRST_VISIT)
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(2 * TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


def ui_environment(home: Path, **settings: str) -> dict[str, str]:
    """The environment of the UIs over ``home``: its Dagster instance, automation off (the
    analyst starts runs), and the given ``MLOPS_*`` settings (e.g. ``MLFLOW_UI_URL``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DAGSTER_"))}
    env.update(
        MLOPS_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster"),
        MLOPS_AUTOMATION_ENABLED="false",
        **{f"MLOPS_{key.upper()}": value for key, value in settings.items()},
    )
    return env


def prepare_dagster_home(home: Path) -> Path:
    """``home``'s Dagster instance directory with its SQLite storage created: `dagster dev` and
    the runs that build a world beside it would otherwise create it at once, and two processes
    creating one SQLite instance can both stamp its schema version (seen: alembic's "more than
    one head present", a code server that never loads)."""
    import dagster as dg

    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.get_runs(limit=1)
        instance.get_latest_materialization_event(dg.AssetKey("any"))  # the event index
        instance.all_instigator_state()
    return dagster_home


ASSET_COUNT = """{ repositoriesOrError { ... on RepositoryConnection {
  nodes { location { name } assetNodes { id } } } } }"""


def _location_loaded(url: str) -> bool:
    try:
        nodes = graphql(url, ASSET_COUNT)["repositoriesOrError"].get("nodes", [])
    except (OSError, AssertionError):
        return False
    return any(n["location"]["name"] == LOCATION and n["assetNodes"] for n in nodes)


@dataclass(frozen=True)
class DagsterDev:
    """A started `dagster dev`: its URL; ``wait_loaded`` blocks until the location is up."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def wait_loaded(self, seconds: float = 300) -> str:
        deadline = time.monotonic() + seconds
        while not _location_loaded(self.url):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"dagster dev exited {self.process.returncode}:\n{_tail(self.log)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"dagster dev not up in {seconds:.0f} s:\n{_tail(self.log)}")
            time.sleep(1)
        return self.url


@contextmanager
def running_dagster_dev(
    env: dict[str, str], port: int, log: Path, *, dg: bool = False
) -> Iterator[DagsterDev]:
    """`dagster dev -w workspace.yaml` (webserver and daemon) over ``env``'s instance on
    127.0.0.1:``port``, until the block exits; with ``dg``, `dg dev` instead (the location from
    ``[tool.dg]`` in pyproject.toml). It starts loading at once: call ``wait_loaded`` before
    using it (and build what it shows meanwhile, if you like: it reads the instance as it
    changes)."""
    if dg:
        command = [str(BIN / "dg"), "dev", "--host", "127.0.0.1", "--port", str(port)]
    else:
        command = [str(BIN / "dagster"), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml")]
        command += ["-h", "127.0.0.1", "-p", str(port)]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield DagsterDev(f"http://127.0.0.1:{port}", process, log)
    finally:
        # dagster dev shuts its webserver, daemon and code servers down on SIGINT
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
        stop_process_group(process, grace_seconds=5)  # what is left (a webserver that hangs)


def _tail(path: Path, characters: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-characters:]
    except OSError:
        return ""


# --- what an analyst opens, in the order the guide shows it ------------------------------------


def open_asset_graph(page: Any, url: str) -> None:
    """The global asset lineage with every group expanded."""
    page.goto(f"{url}/asset-groups")
    page.get_by_role("button", name="Materialize all").wait_for()
    page.locator("button:has(span[aria-label='settings'])").or_(
        page.get_by_role("button", name="settings")
    ).last.click()
    expand = page.get_by_role("menuitem", name=re.compile("Expand all groups"))
    if expand.count():
        expand.click()
    page.keyboard.press("Escape")  # close the menu (already expanded: the browser keeps it)
    page.mouse.click(900, 700)
    page.wait_for_timeout(1500)


def open_group(page: Any, url: str, group: str) -> None:
    """One group's lineage: its assets with their kinds, checks and partitions."""
    page.goto(f"{url}/locations/{LOCATION}/asset-groups/{group}/lineage")
    page.get_by_role("button", name="Materialize").first.wait_for()
    page.wait_for_timeout(1000)


def open_asset(page: Any, url: str, key: str, view: str | None = None) -> None:
    """An asset's page: the overview (metadata of the latest materialization), or a tab."""
    page.goto(f"{url}/assets/{key}" + (f"?view={view}" if view else ""))
    page.get_by_role("button", name="Materialize").first.wait_for()
    if view is None:
        page.get_by_text("Metadata", exact=True).first.wait_for()
    page.wait_for_timeout(1000)


def open_partition_dialog(page: Any, url: str, key: str) -> Any:
    """The asset's 'Materialize…' dialog with every partition offered; returns the dialog."""
    open_asset(page, url, key)
    page.get_by_role("button", name="Materialize…").click()
    confirm = page.get_by_role("button", name="Confirm")  # a multi-asset: both outputs
    with suppress(Exception):
        confirm.click(timeout=5_000)
    dialog = page.get_by_role("dialog").filter(has_text="Partition selection")
    dialog.wait_for()
    dialog.get_by_text(re.compile(r"^\d+ partitions?$")).first.wait_for()
    # the dialog offers the last 90 days first: the demo's days may be older
    with suppress(Exception):
        dialog.get_by_role("button", name="Show all partitions").click(timeout=10_000)
    dialog.get_by_text("All time").or_(
        dialog.get_by_text("Showing the last 90 days")
    ).first.wait_for()
    return dialog


def select_partitions(dialog: Any, selection: str) -> None:
    """Type a partition selection (``2026-01-03`` or ``[2026-01-01...2026-01-07]``)."""
    field = dialog.locator("input[type=text]").first
    field.fill(selection)
    field.press("Enter")


def launch_from_dialog(page: Any, dialog: Any) -> str:
    """Click the dialog's launch button; returns the toast's text ('Launched run 1a2b3c4d',
    'Created backfill abcdefgh')."""
    dialog.get_by_role("button", name=re.compile(r"Launch (\d+ runs?|backfill)")).click()
    toast = page.get_by_text(re.compile(r"^(Launched run|Created backfill) \w+$")).first
    toast.wait_for()
    return str(toast.inner_text())


def open_launchpad(page: Any, url: str, job: str) -> None:
    """A job's launchpad, its config editor filled with the defaults."""
    page.goto(f"{url}/locations/{LOCATION}/jobs/{job}/playground")
    page.locator(".CodeMirror").first.wait_for()
    page.get_by_text("No errors").wait_for()


def set_launchpad_config(page: Any, yaml_text: str) -> None:
    """Replace the launchpad's config with ``yaml_text``, as typed into the editor."""
    page.locator(".CodeMirror").first.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(yaml_text)
    page.get_by_text("No errors").wait_for()


def launchpad_config_text(page: Any) -> str:
    """The text in the launchpad's config editor (CodeMirror keeps it out of the DOM's text)."""
    return str(
        page.locator(".CodeMirror").first.evaluate("element => element.CodeMirror.getValue()")
    )


def open_mlflow_model(page: Any, mlflow_url: str, name: str, version: int | None = None) -> None:
    """The MLflow UI's page of a registered model (its versions and aliases) or of a version
    (aliases and tags, the lineage tags among them)."""
    path = f"#/models/{name}" + (f"/versions/{version}" if version else "")
    page.goto(f"{mlflow_url}/{path}")
    page.get_by_text("@ champion").first.wait_for(timeout=2 * TIMEOUT_MS)
    assistant = page.get_by_role("button", name="Close", exact=True)
    if assistant.count() and assistant.first.is_visible():  # MLflow 3's chat panel, open at first
        assistant.first.click()
    page.get_by_text("@ champion").first.scroll_into_view_if_needed()
    page.wait_for_timeout(1000)


def open_drift_report(page: Any, report_url: str) -> None:
    """The Evidently HTML report, rendered (its scripts draw the tables and plots)."""
    page.goto(report_url)
    page.get_by_text(re.compile("Drift", re.IGNORECASE)).first.wait_for()
    page.wait_for_timeout(1500)


# --- the pytest plugin: a screenshot of every failing browser test ------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    page = getattr(item, "funcargs", {}).get("page")
    if report.when == "call" and report.failed and page is not None:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', item.name)}.png"
        try:
            page.screenshot(path=str(path), full_page=True)
            report.sections.append(("browser", f"screenshot: {path}\npage: {page.url}"))
        except Exception as error:  # a crashed browser: say so, keep the test's own failure
            report.sections.append(("browser", f"no screenshot ({error})"))
    return report
