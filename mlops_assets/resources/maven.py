"""Fetching a Maven artifact with its runtime dependencies into a local cache directory.

The JVM pieces the platform runs beside Python (Spark's extra jars, a local Kafka broker) come
from Maven Central through ``mvn`` itself: Maven reaches it where other resolvers (Spark's
``--packages``) may not. Each artifact set lives in its own versioned directory with a
completion marker, so an interrupted fetch is redone and an upgrade fetches anew.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

COMPLETE_MARKER = ".complete"
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>mlops_assets</groupId><artifactId>fetched-jars</artifactId><version>1</version>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""
_DEPENDENCY = (
    "    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
    "<version>{version}</version></dependency>"
)


def coordinate(text: str) -> tuple[str, str, str]:
    """``group:artifact:version`` as its three parts."""
    parts = text.split(":")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"not a Maven coordinate group:artifact:version: {text!r}")
    return parts[0], parts[1], parts[2]


def cached_jars(directory: Path) -> list[Path]:
    """The jars of a completely fetched directory; empty when not (completely) fetched."""
    if not (directory / COMPLETE_MARKER).exists():
        return []
    return sorted(directory.glob("*.jar"))


def fetch_jars(
    coordinates: Sequence[str],
    directory: Path,
    keep: Callable[[Path], bool] = lambda _: True,
    mvn: str = "mvn",
    timeout_seconds: float = 1800,
) -> list[Path]:
    """Fetch the artifacts ``coordinates`` and their runtime dependencies into ``directory``
    (only the jars ``keep`` accepts); a directory already fetched is left as it is."""
    existing = cached_jars(directory)
    if existing:
        return existing
    if shutil.which(mvn) is None:
        raise RuntimeError(
            f"Maven ({mvn}) is not installed; it is needed to fetch {', '.join(coordinates)}"
        )
    dependencies = "\n".join(
        _DEPENDENCY.format(group=g, artifact=a, version=v)
        for g, a, v in (coordinate(c) for c in coordinates)
    )
    with tempfile.TemporaryDirectory() as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(_POM.format(dependencies=dependencies))
        out = Path(tmp) / "jars"
        result = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={out}",
            ],
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"mvn could not fetch {', '.join(coordinates)}:\n"
                f"{result.stdout[-3000:]}{result.stderr}"
            )
        directory.mkdir(parents=True, exist_ok=True)
        for jar in sorted(out.glob("*.jar")):
            if keep(jar):
                shutil.copy2(jar, directory / jar.name)
    (directory / COMPLETE_MARKER).write_text("\n".join(coordinates) + "\n")
    return cached_jars(directory)
