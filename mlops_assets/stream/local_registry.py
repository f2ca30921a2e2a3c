"""A Confluent-compatible schema registry on loopback for the demo and the tests: Apicurio
Registry (Apache-2.0), whose Confluent API lives under ``/apis/ccompat/v7``.

Confluent's own registry is not on Maven Central; Apicurio's application jar is, and Quarkus
builds it into a runnable application (``registry_build/pom.xml``, built once with Maven into a
versioned cache directory by ``mlops-assets fetch-schema-registry``: about 30 s and 210 MB of
downloads the first time, 130 MB on disk). It keeps its schemas in an in-memory H2 database,
so every start is an empty registry. Start-up takes 2-3 s; it uses about 150 MB of memory.
Production uses a registry of its own (Confluent's, Apicurio's image, Redpanda's...) through
``MLOPS_SCHEMA_REGISTRY_URL``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import urllib.request
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from mlops_assets.resources.jvm import (
    HOST,
    JavaServer,
    JavaServerError,
    accepts,
    find_java,
    free_port,
    start_java_server,
)
from mlops_assets.resources.maven import COMPLETE_MARKER

APICURIO_VERSION = "2.4.2.Final"
FETCH_COMMAND = "mlops-assets fetch-schema-registry"
CONFLUENT_API = "/apis/ccompat/v7"
BUILD_DIR = Path(__file__).parent / "registry_build"
#: small-footprint JVM flags (measured: about 130-150 MB resident)
JVM_FLAGS = (
    "-Xms16m",
    "-Xmx128m",
    "-XX:+UseSerialGC",
    "-XX:MaxMetaspaceSize=128m",
    "-XX:ReservedCodeCacheSize=48m",
    "-XX:TieredStopAtLevel=1",
    "-Xss512k",
    "-Dquarkus.datasource.jdbc.initial-size=2",
    "-Dquarkus.datasource.jdbc.min-size=2",
    "-Dquarkus.datasource.jdbc.max-size=10",
)


def registry_dir(cache_root: str | Path) -> Path:
    return Path(cache_root).expanduser() / f"apicurio-registry-{APICURIO_VERSION}"


def built_registry(cache_root: str | Path) -> Path | None:
    """The built application's launcher jar, or None when not built (completely) yet."""
    directory = registry_dir(cache_root)
    launcher = directory / "quarkus-app" / "quarkus-run.jar"
    return launcher if (directory / COMPLETE_MARKER).exists() and launcher.exists() else None


def fetch_schema_registry(cache_root: str | Path, mvn: str = "mvn") -> Path:
    """Build the registry from Maven Central into the cache (idempotent); its launcher jar."""
    existing = built_registry(cache_root)
    if existing is not None:
        return existing
    if shutil.which(mvn) is None:
        raise JavaServerError(f"Maven ({mvn}) is not installed; it is needed to build the registry")
    target = registry_dir(cache_root)
    with tempfile.TemporaryDirectory() as tmp:
        build = Path(tmp) / "build"
        shutil.copytree(BUILD_DIR, build)
        result = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-s",
                str(build / "settings.xml"),
                "-f",
                str(build / "pom.xml"),
                "package",
            ],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        app = build / "target" / "quarkus-app"
        if result.returncode != 0 or not (app / "quarkus-run.jar").exists():
            raise JavaServerError(
                f"mvn could not build Apicurio Registry {APICURIO_VERSION}:\n"
                f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        shutil.copytree(app, target / "quarkus-app")
    (target / COMPLETE_MARKER).write_text(f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}\n")
    return target / "quarkus-app" / "quarkus-run.jar"


@dataclass
class LocalRegistry:
    """A running local registry; ``url`` is its Confluent-compatible API."""

    url: str
    server: JavaServer

    @property
    def pid(self) -> int:
        return self.server.pid

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> LocalRegistry:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _answers(url: str) -> bool:
    with suppress(OSError), urllib.request.urlopen(f"{url}/subjects", timeout=1) as response:
        return response.status == 200
    return False


def start_local_registry(
    work_dir: str | Path,
    cache_root: str | Path,
    port: int | None = None,
    timeout_seconds: float = 90.0,
    persistent: bool = False,
) -> LocalRegistry:
    """Start the registry on 127.0.0.1:``port`` (a free port when None), its log in
    ``work_dir``; returns once its Confluent API answers. ``persistent`` keeps the schemas in
    an H2 file database in ``work_dir`` (they survive a restart) instead of in memory."""
    launcher = built_registry(cache_root)
    if launcher is None:
        raise JavaServerError(
            f"the schema registry is not built in {registry_dir(cache_root)}: run `{FETCH_COMMAND}`"
        )
    work = Path(work_dir).expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    if accepts(port):
        raise JavaServerError(f"port {port} on {HOST} is already in use: cannot start the registry")
    url = f"http://{HOST}:{port}{CONFLUENT_API}"
    env = dict(os.environ)
    if persistent:
        env["REGISTRY_DATASOURCE_URL"] = f"jdbc:h2:file:{work / 'registry-db'}"
    server = start_java_server(
        "the schema registry",
        [
            find_java(),
            *JVM_FLAGS,
            f"-Dquarkus.http.host={HOST}",
            f"-Dquarkus.http.port={port}",
            "-jar",
            str(launcher),
        ],
        work / "schema-registry.log",
        ready=lambda: _answers(url),
        timeout_seconds=timeout_seconds,
        env=env,
    )
    return LocalRegistry(url, server)
