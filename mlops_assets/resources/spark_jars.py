"""The delta-spark jars: fetched once with Maven into a local cache that Spark's ``spark.jars``
points at (Spark's own ``--packages`` resolver may not reach Maven Central from every machine).

The jar version is the installed ``delta-spark`` wheel's version, so the two always match.
Jars that the installed PySpark already ships (Hadoop, Jackson, Parquet, Scala...) are left out
so that Spark's own versions win.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from importlib.metadata import version
from pathlib import Path

SCALA_BINARY = "2.13"
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>mlops_assets</groupId><artifactId>delta-spark-jars</artifactId><version>1</version>
  <dependencies>
    <dependency>
      <groupId>io.delta</groupId><artifactId>delta-spark_{scala}</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""
_VERSIONED_JAR = re.compile(r"^(?P<artifact>.+?)-\d[\w.\-]*\.jar$")
_COMPLETE = ".complete"


def delta_version() -> str:
    """The installed delta-spark version (the jar version to use)."""
    return version("delta-spark")


def delta_package() -> str:
    """The Maven coordinate of the delta-spark jar, for ``spark.jars.packages``."""
    return f"io.delta:delta-spark_{SCALA_BINARY}:{delta_version()}"


def jar_dir(cache_root: str | Path) -> Path:
    return Path(cache_root).expanduser() / f"delta-spark-{delta_version()}"


def cached_jars(cache_root: str | Path) -> list[Path]:
    """The cached jars of the installed delta-spark version; empty when not fetched yet."""
    directory = jar_dir(cache_root)
    if not (directory / _COMPLETE).exists():
        return []
    return sorted(directory.glob("*.jar"))


def _artifact(jar_name: str) -> str:
    match = _VERSIONED_JAR.match(jar_name)
    return match.group("artifact") if match else jar_name


def _spark_shipped_artifacts() -> set[str]:
    import pyspark

    return {_artifact(p.name) for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}


def fetch_delta_jars(cache_root: str | Path, mvn: str = "mvn") -> list[Path]:
    """Fetch delta-spark and the runtime dependencies Spark lacks into the cache (idempotent)."""
    existing = cached_jars(cache_root)
    if existing:
        return existing
    if shutil.which(mvn) is None:
        raise RuntimeError(f"Maven ({mvn}) is not installed; it is needed to fetch the Delta jars")
    target = jar_dir(cache_root)
    with tempfile.TemporaryDirectory() as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(_POM.format(scala=SCALA_BINARY, version=delta_version()))
        out = Path(tmp) / "jars"
        result = subprocess.run(
            [
                "mvn",
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
            timeout=900,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"mvn could not fetch {delta_package()}:\n{result.stdout[-3000:]}{result.stderr}"
            )
        shipped = _spark_shipped_artifacts()
        target.mkdir(parents=True, exist_ok=True)
        for jar in sorted(out.glob("*.jar")):
            if _artifact(jar.name) not in shipped:
                shutil.copy2(jar, target / jar.name)
    (target / _COMPLETE).write_text(delta_package() + "\n")
    return cached_jars(cache_root)
