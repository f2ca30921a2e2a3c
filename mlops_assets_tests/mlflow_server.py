"""A real ``mlflow server`` on loopback, for tests that need an MLflow *server* (http URI).

``running_mlflow_server`` starts ``mlflow server`` as a subprocess in its own process group on
127.0.0.1 and a free port, with a backend store (a SQLite file in a work directory unless a
backend store URI is given, e.g. a Postgres URL for a later Postgres-backed variant) and
proxied artifacts (``--serve-artifacts --artifacts-destination``: clients upload and download
artifacts through the server, as they do in production, and new experiments get an
``mlflow-artifacts:/`` location). It waits until ``GET /health`` answers *and* a REST call
succeeds (``/health`` is exempt from the host-header check), and always stops the whole process
group (the CLI, its uvicorn worker) afterwards.

Choices, checked against mlflow 3.17:

- ``--workers 1``: one uvicorn worker is plenty for tests and keeps start-up low.
- ``--allowed-hosts`` / ``--cors-allowed-origins``: pinned to the exact loopback address and
  port instead of the default (any localhost port and every private IP range).
- ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` by default: otherwise the server also starts
  the GenAI job runner (a huey scheduler and seven consumer processes, plus a temp directory
  in /dev/shm), which tracking and the model registry do not use.

Start-up on a 2-core machine is about 12 s: about 6 s for the ``mlflow server`` CLI (import
and creating the schema of a fresh SQLite store) and about 5.5 s for the uvicorn worker to
import the FastAPI app. Use the session-scoped fixtures so a test session pays it once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets_tests.helpers import free_port

HOST = "127.0.0.1"


class MlflowServerError(RuntimeError):
    """The server did not come up; the message carries the tail of its log."""


@dataclass(frozen=True)
class MlflowServer:
    """A running ``mlflow server``: where to reach it and what it stores where."""

    uri: str
    """Tracking (and registry) URI, ``http://127.0.0.1:<port>``."""
    port: int
    backend_store_uri: str
    artifacts_destination: str
    log_path: Path
    pid: int
    startup_seconds: float
    """Wall time from spawning the process to the first successful REST call."""

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's combined stdout/stderr."""
        return _tail(self.log_path, lines)


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _rest_ready(uri: str) -> bool:
    """A real tracking API call through host validation and the backend store."""
    url = f"{uri}/api/2.0/mlflow/experiments/search?max_results=1"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            json.load(response)
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def server_command(
    port: int,
    backend_store_uri: str,
    artifacts_destination: str,
    workers: int = 1,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The ``mlflow server`` command line (run with this interpreter's mlflow)."""
    origin = f"http://{HOST}:{port}"
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        artifacts_destination,
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--allowed-hosts",
        f"{HOST}:{port},localhost:{port}",
        "--cors-allowed-origins",
        f"{origin},http://localhost:{port}",
        *extra_args,
    ]


def stop_process_group(process: subprocess.Popen[bytes], grace_seconds: float = 15.0) -> None:
    """SIGTERM the process group of ``process``, then SIGKILL whatever is left after a grace."""
    pgid = process.pid  # started with start_new_session=True: its own group
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_seconds)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)  # anyone left in the group (e.g. a uvicorn worker)?
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        with suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


@contextmanager
def running_mlflow_server(
    workdir: Path,
    *,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    workers: int = 1,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    enable_job_execution: bool = False,
    timeout_seconds: float = 120.0,
    port_attempts: int = 3,
) -> Iterator[MlflowServer]:
    """Run ``mlflow server`` on a free loopback port until the block exits.

    ``backend_store_uri`` defaults to ``sqlite:///<workdir>/mlflow.db`` (pass a
    ``postgresql://`` URL for a Postgres-backed server); ``artifacts_destination`` defaults to
    ``<workdir>/artifacts``. A port lost to another process between choosing and binding is
    retried on a new port; any other early exit raises ``MlflowServerError`` with the log.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    backend = backend_store_uri or f"sqlite:///{(workdir / 'mlflow.db').resolve()}"
    destination = artifacts_destination or str((workdir / "artifacts").resolve())
    child_env = {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if enable_job_execution else "false",
        **(env or {}),
    }
    child_env.pop("MLFLOW_TRACKING_URI", None)  # the server owns its stores
    for attempt in range(1, port_attempts + 1):
        port = free_port()
        uri = f"http://{HOST}:{port}"
        log_path = workdir / f"server-{port}.log"
        started = time.monotonic()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                server_command(port, backend, destination, workers, extra_args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env,
                cwd=workdir,
                start_new_session=True,
            )
        try:
            ready = False
            while time.monotonic() - started < timeout_seconds:
                if process.poll() is not None:
                    break
                if _answers(f"{uri}/health") and _rest_ready(uri):
                    ready = True
                    break
                time.sleep(0.1)
            if not ready:
                log_text = _tail(log_path, 60)
                lost_port = "address already in use" in log_text.lower()
                if process.poll() is not None and lost_port and attempt < port_attempts:
                    continue  # lost the port race: `finally` stops the group, try again
                state = (
                    f"exited with {process.returncode}"
                    if process.poll() is not None
                    else f"not ready after {timeout_seconds:.0f} s"
                )
                raise MlflowServerError(f"mlflow server on {uri} {state}; log:\n{log_text}")
            yield MlflowServer(
                uri=uri,
                port=port,
                backend_store_uri=backend,
                artifacts_destination=destination,
                log_path=log_path,
                pid=process.pid,
                startup_seconds=time.monotonic() - started,
            )
            return
        finally:
            stop_process_group(process)
    raise MlflowServerError("unreachable")  # pragma: no cover


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real ``mlflow server`` (SQLite backend, proxied local artifacts) per test session."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_server_uri(mlflow_server: MlflowServer) -> str:
    """The ``http://127.0.0.1:<port>`` tracking URI of the session's ``mlflow server``."""
    return mlflow_server.uri


def tiny_model_asset(name: str, note: str) -> dg.AssetsDefinition:
    """An asset that logs a small XGBoost model (params, a metric, a text artifact ``note`` at
    ``notes/hello.txt``) in the MLflow run the resource opens; metadata: run id, model URI."""

    @dg.asset(name=name, required_resource_keys={"mlflow_tracking"})
    def tiny_model(context) -> dg.MaterializeResult:
        import mlflow
        import numpy as np
        import xgboost as xgb
        from mlflow.models import infer_signature

        tracking = context.resources.mlflow_tracking
        rng = np.random.default_rng(0)
        features = rng.normal(size=(200, 3))
        labels = (features[:, 0] + 0.1 * rng.normal(size=200) > 0).astype(int)
        model = xgb.XGBClassifier(n_estimators=5, max_depth=2, n_jobs=1).fit(features, labels)
        with tracking.start_run(context, run_name=name) as run:
            mlflow.log_params({"n_estimators": 5, "max_depth": 2})
            mlflow.log_metric("train_accuracy", float((model.predict(features) == labels).mean()))
            mlflow.log_text(note, "notes/hello.txt")
            # explicit requirements: no dependency inference (it would spawn a subprocess)
            info = mlflow.xgboost.log_model(
                model,
                name="model",
                pip_requirements=[f"xgboost=={xgb.__version__}"],
                signature=infer_signature(features, model.predict(features)),
            )
        return dg.MaterializeResult(
            metadata={"mlflow_run_id": run.info.run_id, "model_uri": info.model_uri}
        )

    return tiny_model
