"""A Spark Connect server process for tests: started, waited for, and stopped with its group."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def running_connect_server(
    command: Sequence[str], env: dict[str, str], log: Path, port: int, seconds: float = 120
) -> Iterator[str]:
    """Run ``command`` (a Spark Connect server on loopback ``port``) until the block ends;
    yields its ``sc://`` address once the server says it started. On the way out any Connect
    session of this process is closed first (its exit hook would otherwise retry RPCs at a dead
    server), the server's process group is stopped, and the mark PySpark leaves on the process
    (``SPARK_CONNECT_MODE_ENABLED``, which would turn later local sessions, and the processes
    they start, into Connect clients) is cleared."""
    with log.open("w") as out:
        server = subprocess.Popen(
            list(command), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + seconds
        while "Spark Connect server started" not in log.read_text():
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "Spark Connect server did not start"
            time.sleep(1)
        yield f"sc://127.0.0.1:{port}"
    finally:
        from pyspark.sql.connect.session import SparkSession as RemoteSession

        remote = RemoteSession.getActiveSession()
        if remote is not None:
            remote.stop()
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
        os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
