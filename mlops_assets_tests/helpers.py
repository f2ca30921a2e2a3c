"""Test helpers: real tables built with the project's own pure functions, free ports, waits."""

from __future__ import annotations

import itertools
import json
import socket
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import polars as pl
import pyarrow as pa

from mlops_assets.datagen import GeneratorConfig, generate_day
from mlops_assets.features.duckdb_engine import compute_features_duckdb
from mlops_assets.validate.rules import apply_contract


def validated_day(day: date, config: GeneratorConfig) -> pl.DataFrame:
    """A generated day passed through the contract, as the silver table holds it."""
    generated = generate_day(day, config)
    raw = generated.with_columns(pl.all().cast(pl.Utf8)).with_columns(
        pl.lit(f"transactions_{day}.csv").alias("_source_file"),
        pl.int_range(1, generated.height + 1, dtype=pl.Int64).alias("_source_row"),
        pl.lit(datetime(2026, 1, 1, tzinfo=UTC)).alias("_ingested_at"),
        pl.lit(False).alias("_timestamp_from_step"),
    )
    outcome = apply_contract(raw, day, config.epoch)
    return outcome.valid.with_columns(pl.lit(day).alias("txn_date"))


def feature_days(days: list[date], config: GeneratorConfig) -> pl.DataFrame:
    """Features of every day but the first (which only supplies the 24-hour look-back)."""
    validated = {day: validated_day(day, config) for day in days}
    frames = []
    for previous, day in itertools.pairwise(days):
        table: pa.Table = pl.concat([validated[previous], validated[day]]).to_arrow()
        frames.append(pl.from_arrow(compute_features_duckdb(table, day)))
    return pl.concat(frames)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on loopback right now (the server may still lose a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], seconds: float = 20.0) -> Any:
    """The first truthy value of ``condition``, polled every 50 ms; fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {seconds} s")


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """One GraphQL call to the Dagster webserver at ``url``; fails on GraphQL errors."""
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.load(response)
    assert "errors" not in body, body
    return body["data"]
