"""Spark's view of a lake on S3: the S3A filesystem (hadoop-aws), configured from the same
``MLOPS_S3_*`` settings that delta-rs uses, and ``s3a://`` table paths.

Credentials are never settings: like delta-rs, S3A takes them from the process environment
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` from the pod's
Secret), or from a web-identity token (IRSA), a profile or the instance role, through the AWS
SDK's default provider chain.

The S3A jars go on the JVMs' class path (``extraClassPath``), not in ``spark.jars``: a local
session then loads the 700 MB AWS SDK bundle in place instead of copying it into every
session's work directory, and cluster executors find them at the same path in the image.
"""

from __future__ import annotations

import os
from typing import Protocol

from mlops_assets.resources.spark_jars import FETCH_COMMAND, cached_s3a_jars, s3a_jars

#: the AWS SDK v2's default chain: environment, system properties, web identity, profile,
#: container and instance credentials (S3A instantiates it through its ``create()`` factory)
CREDENTIALS_PROVIDER = "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider"
_S3_SCHEMES = ("s3://", "s3a://")


class S3ASettings(Protocol):
    s3_endpoint_url: str | None
    s3_region: str | None
    s3_allow_http: bool
    spark_jars_dir: str


def on_s3(uri: str) -> bool:
    """Whether a lake location is an S3 bucket."""
    return uri.startswith(_S3_SCHEMES)


def spark_path(uri: str) -> str:
    """A lake URI as Spark's Hadoop filesystems name it (``s3://`` is ``s3a://`` there)."""
    return "s3a://" + uri.removeprefix("s3://") if uri.startswith("s3://") else uri


def s3a_hadoop_config(settings: S3ASettings) -> dict[str, str]:
    """The ``fs.s3a.*`` Hadoop options for the settings' S3 endpoint and region."""
    options = {"fs.s3a.aws.credentials.provider": CREDENTIALS_PROVIDER}
    if settings.s3_endpoint_url:
        # S3-compatible stores (MinIO, moto, Ceph) address buckets by path, as delta-rs does
        options["fs.s3a.endpoint"] = settings.s3_endpoint_url
        options["fs.s3a.path.style.access"] = "true"
    if settings.s3_region:
        options["fs.s3a.endpoint.region"] = settings.s3_region
    if settings.s3_allow_http:
        options["fs.s3a.connection.ssl.enabled"] = "false"
    return options


def s3a_spark_config(settings: S3ASettings) -> dict[str, str]:
    """Spark configuration for a lake on S3: ``spark.hadoop.fs.s3a.*`` and the S3A jars on the
    driver's and executors' class path (when they are in the cache)."""
    config = {f"spark.hadoop.{key}": value for key, value in s3a_hadoop_config(settings).items()}
    jars = cached_s3a_jars(settings.spark_jars_dir)
    if jars:
        classpath = os.pathsep.join(str(jar) for jar in jars)
        config["spark.driver.extraClassPath"] = classpath
        config["spark.executor.extraClassPath"] = classpath
    return config


def is_missing_s3a(error: BaseException) -> bool:
    """Whether a Spark error says that the S3A filesystem classes are not on the class path."""
    message = str(error)
    return ("S3AFileSystem" in message and "not found" in message) or (
        'No FileSystem for scheme "s3a"' in message
    )


def missing_s3a_message(jars_dir: str) -> str:
    return (
        f"Spark cannot open s3a:// paths: the S3A jars ({s3a_jars().package} and its AWS SDK "
        f"bundle) are not on its class path. Fetch them with `{FETCH_COMMAND}` (into "
        f"MLOPS_SPARK_JARS_DIR={jars_dir}) and start a new step process; on a Spark cluster or "
        "Spark Connect server, put them on the driver's and executors' class path."
    )
