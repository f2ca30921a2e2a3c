"""A throwaway real S3 endpoint for tests: moto's server mode in a child process.

``running_s3_server`` starts ``python -m moto.server`` on 127.0.0.1 on a free port (a separate
process, so its state is not shared with any in-process ``mock_aws`` and no native call of the
test process can starve it of the GIL), waits until it answers HTTP, yields an ``S3Server``
(endpoint URL, fake credentials, region) and always terminates it afterwards (SIGTERM, then
SIGKILL).

Nothing is set in ``os.environ`` here: tests pass the credentials explicitly (``S3Server.
storage_options`` for delta-rs and the landing zone, ``S3Server.client()`` for boto3) or set
them with ``monkeypatch`` (``S3Server.env``), so they never leak into other tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlops_assets_tests.helpers import free_port

HOST = "127.0.0.1"
REGION = "us-east-1"
ACCESS_KEY_ID = "testing-access-key"
SECRET_ACCESS_KEY = "testing-secret-key"  # moto accepts any credentials


class S3ServerError(RuntimeError):
    """moto's server did not start; the message carries its output."""


@dataclass(frozen=True)
class S3Server:
    """A running moto S3 endpoint and the fake credentials that it accepts."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str
    pid: int
    log_path: Path

    @property
    def storage_options(self) -> dict[str, str]:
        """delta-rs / object_store storage options for this endpoint (plain HTTP).

        No locking provider and no ``AWS_S3_ALLOW_UNSAFE_RENAME``: deltalake 1.x commits to S3
        with a conditional put (``If-None-Match: *``), which moto 5 implements (as AWS S3 has
        since 2024), so concurrent writers conflict instead of overwriting each other.
        """
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
        }

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS environment variables for this endpoint (for ``monkeypatch``)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
        }

    def client(self) -> Any:
        """A boto3 S3 client for this endpoint (explicit credentials, no environment)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        )

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset API)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass


def _answers(endpoint_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint_url}/moto-api/", timeout=2) as response:
            return bool(response.status < 500)
    except urllib.error.HTTPError as error:
        return error.code < 500
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


@contextmanager
def running_s3_server(timeout_seconds: float = 30.0, port_attempts: int = 3) -> Iterator[S3Server]:
    """Run moto's S3 server in a child process until the block exits."""
    base = Path(tempfile.mkdtemp(prefix="motos3-"))
    log_path = base / "moto.log"
    # the child gets no AWS_* from the parent: its behaviour must not depend on the host's setup
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["MOTO_ALLOW_NONEXISTENT_REGION"] = "true"
    for attempt in range(1, port_attempts + 1):
        port = free_port()
        endpoint_url = f"http://{HOST}:{port}"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=base,
            )
        deadline = time.monotonic() + timeout_seconds
        while process.poll() is None and not _answers(endpoint_url):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if process.poll() is None and _answers(endpoint_url):
            break
        _stop(process)
        output = log_path.read_text(errors="replace")
        if attempt == port_attempts or "address already in use" not in output.lower():
            raise S3ServerError(f"moto server did not start on {endpoint_url}:\n{output}")
    try:
        yield S3Server(
            endpoint_url=endpoint_url,
            access_key_id=ACCESS_KEY_ID,
            secret_access_key=SECRET_ACCESS_KEY,
            region=REGION,
            pid=process.pid,
            log_path=log_path,
        )
    finally:
        _stop(process)
        with suppress(OSError):
            log_path.unlink()
            base.rmdir()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server (real HTTP, its own process) per test session."""
    with running_s3_server() as server:
        yield server
