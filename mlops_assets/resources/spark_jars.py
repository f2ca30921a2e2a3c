"""The jars Spark needs beyond PySpark's own, fetched once with Maven into a local cache
(Spark's own ``--packages`` resolver may not reach Maven Central from every machine):

- delta-spark, at the installed ``delta-spark`` wheel's version, so the two always match;
- the S3A filesystem (``hadoop-aws`` at the version of the Hadoop client that the installed
  PySpark ships, with its AWS SDK v2 bundle), needed only when the lake is on ``s3://``.

Each set lives in its own versioned directory with a completion marker, so a PySpark or
delta-spark upgrade fetches anew. Jars that PySpark already ships (Hadoop client, Jackson,
Parquet, Scala...) are left out so that Spark's own versions win.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from mlops_assets.resources.maven import cached_jars as cached_maven_jars
from mlops_assets.resources.maven import fetch_jars

SCALA_BINARY = "2.13"
#: the command that fills the cache (what error messages tell the user to run)
FETCH_COMMAND = "mlops-assets fetch-spark-jars"
_VERSIONED_JAR = re.compile(r"^(?P<artifact>.+?)-\d[\w.\-]*\.jar$")
_HADOOP_CLIENT = re.compile(r"^hadoop-client-api-(?P<version>\d[\w.\-]*)\.jar$")


@dataclass(frozen=True)
class JarSet:
    """One Maven artifact and the runtime dependencies Spark lacks, cached in one directory."""

    name: str
    group: str
    artifact: str
    version: str

    @property
    def package(self) -> str:
        """The Maven coordinate, as ``spark.jars.packages`` takes it."""
        return f"{self.group}:{self.artifact}:{self.version}"

    def directory(self, cache_root: str | Path) -> Path:
        return Path(cache_root).expanduser() / f"{self.name}-{self.version}"

    def cached(self, cache_root: str | Path) -> list[Path]:
        """The cached jars; empty when not (completely) fetched yet."""
        return cached_maven_jars(self.directory(cache_root))


def _pyspark_jars() -> list[Path]:
    import pyspark

    return sorted((Path(pyspark.__file__).parent / "jars").glob("*.jar"))


def delta_version() -> str:
    """The installed delta-spark version (the jar version to use)."""
    return version("delta-spark")


def hadoop_version() -> str:
    """The version of the Hadoop client that the installed PySpark ships (hadoop-aws must
    match it exactly)."""
    for jar in _pyspark_jars():
        match = _HADOOP_CLIENT.match(jar.name)
        if match:
            return match.group("version")
    raise RuntimeError("the installed PySpark ships no hadoop-client-api jar")


def delta_jars() -> JarSet:
    return JarSet("delta-spark", "io.delta", f"delta-spark_{SCALA_BINARY}", delta_version())


def s3a_jars() -> JarSet:
    return JarSet("hadoop-aws", "org.apache.hadoop", "hadoop-aws", hadoop_version())


def delta_package() -> str:
    """The Maven coordinate of the delta-spark jar, for ``spark.jars.packages``."""
    return delta_jars().package


def jar_dir(cache_root: str | Path) -> Path:
    """The cache directory of the delta-spark jars."""
    return delta_jars().directory(cache_root)


def cached_jars(cache_root: str | Path) -> list[Path]:
    """The cached delta-spark jars; empty when not fetched yet."""
    return delta_jars().cached(cache_root)


def cached_s3a_jars(cache_root: str | Path) -> list[Path]:
    """The cached hadoop-aws jars (with the AWS SDK bundle); empty when not fetched yet."""
    return s3a_jars().cached(cache_root)


def _artifact(jar_name: str) -> str:
    match = _VERSIONED_JAR.match(jar_name)
    return match.group("artifact") if match else jar_name


def fetch(jars: JarSet, cache_root: str | Path, mvn: str = "mvn") -> list[Path]:
    """Fetch ``jars`` and the runtime dependencies Spark lacks into the cache (idempotent)."""
    shipped = {_artifact(p.name) for p in _pyspark_jars()}
    return fetch_jars(
        [jars.package],
        jars.directory(cache_root),
        keep=lambda jar: _artifact(jar.name) not in shipped,
        mvn=mvn,
    )


def fetch_delta_jars(cache_root: str | Path, mvn: str = "mvn") -> list[Path]:
    """Fetch the delta-spark jars into the cache (idempotent)."""
    return fetch(delta_jars(), cache_root, mvn)


def fetch_s3a_jars(cache_root: str | Path, mvn: str = "mvn") -> list[Path]:
    """Fetch hadoop-aws and the AWS SDK bundle (about 700 MB) into the cache (idempotent)."""
    return fetch(s3a_jars(), cache_root, mvn)


def fetch_spark_jars(cache_root: str | Path, mvn: str = "mvn") -> list[Path]:
    """Fetch every jar set the platform's Spark steps may need: Delta, and S3A for a lake on S3."""
    return fetch_delta_jars(cache_root, mvn) + fetch_s3a_jars(cache_root, mvn)
