"""The S3 path end to end against a real S3 endpoint (moto's server in its own process).

Generated transaction files are uploaded with boto3 under ``s3://<bucket>/landing/``; the
landing zone lists and reads them, the real landing sensor requests their days, and the real
ingest assets (raw, validated + quarantined, features) write their Delta tables under
``s3://<bucket>/lake`` with delta-rs, through a real (ephemeral) Dagster instance. Credentials
and the endpoint reach pyarrow and delta-rs either as explicit storage options or through the
standard AWS environment variables (set with ``monkeypatch`` only).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pyarrow.fs as pafs
import pytest
from deltalake import DeltaTable

from mlops_assets.datagen import GeneratorConfig, write_day
from mlops_assets.environment import build_resources
from mlops_assets.ingest.sensors import build_landing_sensor
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.landing import LandingZone
from mlops_assets.settings import Settings
from mlops_assets.tables import (
    QUARANTINED_TRANSACTIONS,
    RAW_TRANSACTIONS,
    TRANSACTION_FEATURES,
    VALIDATED_TRANSACTIONS,
)
from mlops_assets.uris import filesystem, read_bytes
from mlops_assets_tests.pipeline import INGEST, materialize
from mlops_assets_tests.s3_server import S3Server

DAYS = [date(2026, 1, 1), date(2026, 1, 2)]
CONFIG = GeneratorConfig(rows_per_day=2_000, seed=5, bad_row_share=0.01)


def new_bucket(s3: S3Server) -> str:
    """A fresh, uniquely named bucket on the server."""
    name = f"mlops-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


@dataclass
class S3Platform:
    """A bucket holding the landing zone and the lake, and the resources that point at it."""

    s3: S3Server
    bucket: str
    local_files: dict[date, Path]
    settings: Settings
    resources: dict[str, Any]

    @property
    def landing_uri(self) -> str:
        return f"s3://{self.bucket}/landing"

    @property
    def lake_uri(self) -> str:
        return f"s3://{self.bucket}/lake"

    @property
    def lake(self) -> DeltaLake:
        return self.resources["lake"]

    @property
    def landing(self) -> LandingZone:
        return self.resources["landing"]

    def keys(self, prefix: str) -> list[str]:
        """Every object key under ``prefix`` in the bucket."""
        paginator = self.s3.client().get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]


@pytest.fixture(scope="module")
def platform(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Platform]:
    """Two generated days landed in a new bucket; resources on s3:// with explicit options."""
    home = tmp_path_factory.mktemp("s3home")
    bucket = new_bucket(s3_server)
    client = s3_server.client()
    local_files: dict[date, Path] = {}
    for day in DAYS:
        path = write_day(day, CONFIG, home / "generated")
        client.upload_file(str(path), bucket, f"landing/{path.name}")
        local_files[day] = path
    settings = Settings(
        home=str(home),
        landing_uri=f"s3://{bucket}/landing",
        lake_uri=f"s3://{bucket}/lake",
        landing_settle_seconds=0,
    )
    resources = build_resources(settings)
    # until the settings carry object-store options, the S3 resources get them here
    resources["landing"] = LandingZone(
        uri=settings.resolved_landing_uri, storage_options=s3_server.storage_options
    )
    resources["lake"] = DeltaLake(
        root_uri=settings.resolved_lake_uri,
        compression=settings.lake_compression,
        storage_options=s3_server.storage_options,
    )
    yield S3Platform(s3_server, bucket, local_files, settings, resources)


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def tick(
    platform: S3Platform, instance: dg.DagsterInstance, cursor: str | None = None
) -> dg.SensorResult:
    """One evaluation of the real landing sensor on ``instance``."""
    sensor = build_landing_sensor()
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"landing": platform.landing, "policy": platform.resources["policy"]},
    ) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_the_landing_zone_lists_and_reads_files_in_s3(platform: S3Platform) -> None:
    files = platform.landing.list_files()

    assert [f.uri for f in files] == [
        f"{platform.landing_uri}/{platform.local_files[day].name}" for day in DAYS
    ]
    for file, day in zip(files, DAYS, strict=True):
        local = platform.local_files[day]
        assert file.name == local.name
        assert file.size == local.stat().st_size
        assert file.mtime_ns > 0
        assert platform.landing.read_bytes(file) == local.read_bytes()


def test_the_landing_zone_ignores_partial_and_hidden_uploads(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = new_bucket(s3_server)
    client = s3_server.client()
    for key in ("in/transactions_2026-01-01.csv", "in/.hidden.csv", "in/x.csv.part", "in/a.txt"):
        client.put_object(Bucket=bucket, Key=key, Body=b"step\n1\n")
    landing = LandingZone(uri=f"s3://{bucket}/in/", storage_options=s3_server.storage_options)

    assert [f.uri for f in landing.list_files()] == [
        f"s3://{bucket}/in/transactions_2026-01-01.csv"
    ]
    assert (
        LandingZone(
            uri=f"s3://{bucket}/nothing-here", storage_options=s3_server.storage_options
        ).list_files()
        == []
    )


def test_the_landing_sensor_requests_the_days_of_files_in_s3(platform: S3Platform) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        result = tick(platform, instance)

        requests = list(result.run_requests or [])
        assert [r.partition_key for r in requests] == [d.isoformat() for d in DAYS]
        for request, day in zip(requests, DAYS, strict=True):
            uri = f"{platform.landing_uri}/{platform.local_files[day].name}"
            assert request.tags["mlops/landing_file"] == uri
            assert request.run_key is not None and request.run_key.startswith(f"{day}:{uri}:")
            assert request.asset_selection == [dg.AssetKey("raw_transactions")]
        # the next tick, with the cursor, has nothing new
        assert list(tick(platform, instance, result.cursor).run_requests or []) == []


def test_ingest_writes_and_reads_delta_tables_in_s3(
    platform: S3Platform, instance: dg.DagsterInstance
) -> None:
    for day in DAYS:
        result = materialize(INGEST, platform.resources, instance, day)
        assert result.success

    generated = {
        day: pl.read_csv(platform.local_files[day], infer_schema=False).height for day in DAYS
    }
    lake = platform.lake
    assert lake.days(RAW_TRANSACTIONS) == DAYS
    for day in DAYS:
        raw = lake.read(RAW_TRANSACTIONS, days=[day])
        valid = lake.read(VALIDATED_TRANSACTIONS, days=[day])
        rejected = lake.read(QUARANTINED_TRANSACTIONS, days=[day])
        assert raw.num_rows == generated[day]
        assert valid.num_rows + rejected.num_rows == raw.num_rows
        assert 0 < rejected.num_rows < raw.num_rows * 0.05
        sources = set(raw.column("_source_file").to_pylist())
        assert sources == {f"{platform.landing_uri}/{platform.local_files[day].name}"}
    # the features of the second day (the first day supplies its 24-hour look-back)
    assert lake.read(TRANSACTION_FEATURES, days=[DAYS[1]]).num_rows > 0

    # the tables really are in the bucket, readable by any delta-rs client with the options
    table_uri = lake.table_uri(VALIDATED_TRANSACTIONS)
    assert table_uri.startswith(f"{platform.lake_uri}/")
    delta = DeltaTable(table_uri, storage_options=platform.s3.storage_options)
    assert delta.to_pyarrow_table().num_rows == sum(
        lake.read(VALIDATED_TRANSACTIONS, days=[d]).num_rows for d in DAYS
    )
    prefix = table_uri.removeprefix(f"s3://{platform.bucket}/") + "/"
    keys = platform.keys(prefix)
    assert any(k.startswith(f"{prefix}_delta_log/") and k.endswith(".json") for k in keys)
    assert {f"txn_date={d.isoformat()}" for d in DAYS} <= {
        k.removeprefix(prefix).split("/")[0] for k in keys
    }
    # the materializations point at the S3 tables
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("validated_transactions"),
            asset_partitions=[DAYS[0].isoformat()],
        ),
        limit=1,
    ).records[0]
    assert record.asset_materialization is not None
    assert record.asset_materialization.metadata["table_uri"].value == table_uri


def test_rematerializing_a_day_on_s3_replaces_only_that_day(
    platform: S3Platform, instance: dg.DagsterInstance
) -> None:
    if platform.lake.version(RAW_TRANSACTIONS) is None:
        for day in DAYS:
            materialize(["raw_transactions"], platform.resources, instance, day)
    lake = platform.lake
    before = lake.version(RAW_TRANSACTIONS)
    other_day = lake.read(RAW_TRANSACTIONS, days=[DAYS[0]])

    materialize(["raw_transactions"], platform.resources, instance, DAYS[1])

    assert lake.version(RAW_TRANSACTIONS) == (before or 0) + 1
    assert lake.read(RAW_TRANSACTIONS, days=[DAYS[0]]).equals(other_day)
    assert lake.read(RAW_TRANSACTIONS, days=[DAYS[1]]).num_rows == (
        pl.read_csv(platform.local_files[DAYS[1]], infer_schema=False).height
    )
    # the previous version stays readable (time travel on S3)
    assert lake.read(RAW_TRANSACTIONS, version=before).num_rows == sum(
        lake.read(RAW_TRANSACTIONS, days=[d]).num_rows for d in DAYS
    )


def test_the_landing_sensor_skips_files_already_ingested_from_s3(
    platform: S3Platform, instance: dg.DagsterInstance
) -> None:
    if not instance.get_materialized_partitions(dg.AssetKey("raw_transactions")):
        for day in DAYS:
            materialize(["raw_transactions"], platform.resources, instance, day)

    # no cursor: the sensor has to recognise the files by their content hash in the metadata
    assert list(tick(platform, instance).run_requests or []) == []

    # a corrected delivery of the first day re-requests exactly that day
    lines = platform.local_files[DAYS[0]].read_bytes().splitlines(keepends=True)
    platform.s3.client().put_object(
        Bucket=platform.bucket,
        Key=f"landing/{platform.local_files[DAYS[0]].name}",
        Body=b"".join(lines[:-1]),
    )
    try:
        requests = list(tick(platform, instance).run_requests or [])
        assert [r.partition_key for r in requests] == [DAYS[0].isoformat()]
    finally:
        platform.s3.client().upload_file(
            str(platform.local_files[DAYS[0]]),
            platform.bucket,
            f"landing/{platform.local_files[DAYS[0]].name}",
        )


def test_reports_are_written_to_the_s3_lake(platform: S3Platform) -> None:
    uri = platform.lake.write_report("<html>drift</html>", "drift_report", "2026-01-02.html")

    assert uri == f"{platform.lake_uri}/reports/drift_report/2026-01-02.html"
    assert read_bytes(uri, platform.s3.storage_options) == b"<html>drift</html>"


def test_credentials_from_the_standard_aws_environment(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without storage options, pyarrow and delta-rs take the endpoint and credentials from
    AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... (what a pod gets from its secret / IRSA)."""
    bucket = new_bucket(s3_server)
    day = date(2026, 1, 3)
    path = write_day(day, GeneratorConfig(rows_per_day=300, seed=1), tmp_path)
    s3_server.client().upload_file(str(path), bucket, f"landing/{path.name}")
    for variable, value in s3_server.env.items():
        monkeypatch.setenv(variable, value)

    landing = LandingZone(uri=f"s3://{bucket}/landing")
    (file,) = landing.list_files()
    assert landing.read_bytes(file) == path.read_bytes()

    lake = DeltaLake(root_uri=f"s3://{bucket}/lake")
    frame = pl.read_csv(path, infer_schema=False)
    write = lake.overwrite_day(RAW_TRANSACTIONS, frame.to_arrow(), day)
    assert write.rows == frame.height
    assert lake.overwrite_day(RAW_TRANSACTIONS, frame.head(10).to_arrow(), day).version == 1
    assert lake.read(RAW_TRANSACTIONS, days=[day]).num_rows == 10
    assert lake.days(RAW_TRANSACTIONS) == [day]


def test_storage_options_in_any_spelling_reach_pyarrow(s3_server: S3Server) -> None:
    """Lower-case keys and a host:port endpoint (plain HTTP through AWS_ALLOW_HTTP) work too;
    options only delta-rs knows are ignored by pyarrow."""
    bucket = new_bucket(s3_server)
    s3_server.client().put_object(Bucket=bucket, Key="l/transactions_2026-01-01.csv", Body=b"a\n")
    options = {
        "endpoint": s3_server.endpoint_url.removeprefix("http://"),
        "allow_http": "true",
        "aws_access_key_id": s3_server.access_key_id,
        "aws_secret_access_key": s3_server.secret_access_key,
        "region": s3_server.region,
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }
    fs, path = filesystem(f"s3://{bucket}/l/", options)
    assert isinstance(fs, pafs.S3FileSystem)

    assert path == f"{bucket}/l"
    assert read_bytes(f"s3://{bucket}/l/transactions_2026-01-01.csv", options) == b"a\n"
    assert [
        f.name for f in LandingZone(uri=f"s3://{bucket}/l", storage_options=options).list_files()
    ] == ["transactions_2026-01-01.csv"]


def test_endpoint_in_options_and_credentials_from_the_environment(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The production split: endpoint/region as (non-secret) settings, the keys from the
    pod's environment (a Secret or IRSA)."""
    bucket = new_bucket(s3_server)
    s3_server.client().put_object(Bucket=bucket, Key="in/transactions_2026-01-04.csv", Body=b"a\n")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    options = {
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_REGION": s3_server.region,
        "AWS_ALLOW_HTTP": "true",
    }

    landing = LandingZone(uri=f"s3://{bucket}/in", storage_options=options)
    assert [f.name for f in landing.list_files()] == ["transactions_2026-01-04.csv"]
    lake = DeltaLake(root_uri=f"s3://{bucket}/lake", storage_options=options)
    frame = pl.DataFrame({"a": ["1", "2"]})
    assert lake.overwrite_day(RAW_TRANSACTIONS, frame.to_arrow(), date(2026, 1, 4)).version == 0
    assert lake.read(RAW_TRANSACTIONS).num_rows == 2
