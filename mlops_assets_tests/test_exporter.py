"""The pipeline exporter over a real Dagster instance: runs and a failed job, the freshness of a
daily asset, served over HTTP in Prometheus' text format, cached between readings, and still
serving the last figures (with the failure flagged) when a reading fails."""

import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlops_assets.monitor.exporter import PipelineCollector, serve
from mlops_assets.monitor.pipeline_reading import Sample, Watched, read_pipeline
from mlops_assets_tests.helpers import free_port

daily = dg.DailyPartitionsDefinition(start_date="2026-01-01")
STATE = {"fail": False}


@dg.asset(partitions_def=daily)
def daily_table() -> None:
    if STATE["fail"]:
        raise RuntimeError("a bad delivery")


WATCHED = Watched(freshness={"daily_table": (30 * 3600.0, 36 * 3600.0)}, sensors={})


def _by_key(samples: list[Sample]) -> dict[tuple[str, tuple[str, ...]], float]:
    return {(s.name, s.labels): s.value for s in samples}


def test_runs_and_freshness_from_the_instance() -> None:
    with dg.instance_for_test() as instance:
        before = _by_key(read_pipeline(instance, WATCHED))
        assert (
            "mlops_asset_last_materialization_timestamp_seconds",
            ("daily_table",),
        ) not in before
        assert before[("mlops_asset_freshness_fail_window_seconds", ("daily_table",))] == 129600
        assert dg.materialize([daily_table], instance=instance, partition_key="2026-05-19").success
        assert dg.materialize([daily_table], instance=instance, partition_key="2026-05-20").success
        STATE["fail"] = True
        try:
            failed = dg.materialize(
                [daily_table], instance=instance, partition_key="2026-05-21", raise_on_error=False
            )
        finally:
            STATE["fail"] = False
        assert not failed.success
        job = failed.dagster_run.job_name
        now = _by_key(read_pipeline(instance, WATCHED))
        assert now[("mlops_pipeline_runs", (job, "SUCCESS"))] == 2
        assert now[("mlops_pipeline_runs", (job, "FAILURE"))] == 1
        assert now[("mlops_pipeline_latest_run_failed", (job, "error"))] == 1
        assert now[("mlops_pipeline_latest_run_failed", (job, "gate_blocked"))] == 0
        last = now[("mlops_asset_last_materialization_timestamp_seconds", ("daily_table",))]
        assert 0 <= time.time() - last < 120
        latest_day = now[("mlops_asset_latest_partition_timestamp_seconds", ("daily_table",))]
        assert latest_day == datetime(2026, 5, 20, tzinfo=UTC).timestamp()  # the failed day is not
        # the next success clears the failure; runs older than a day do not count
        assert dg.materialize([daily_table], instance=instance, partition_key="2026-05-21").success
        later = _by_key(read_pipeline(instance, WATCHED))
        assert later[("mlops_pipeline_latest_run_failed", (job, "error"))] == 0
        tomorrow = _by_key(
            read_pipeline(instance, WATCHED, now=datetime.now(UTC) + timedelta(days=2))
        )
        assert ("mlops_pipeline_runs", (job, "SUCCESS")) not in tomorrow


def _scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        family.name: [(sample.labels, sample.value) for sample in family.samples]
        for family in text_string_to_metric_families(text)
    }


def test_served_over_http_cached_and_kept_when_a_reading_fails() -> None:
    readings = {"count": 0, "fail": False}

    def read() -> list[Sample]:
        readings["count"] += 1
        if readings["fail"]:
            raise ConnectionError("instance database unreachable")
        return [Sample("mlops_drift_share", ("2026-05-20",), 0.25)]

    collector = PipelineCollector(read, refresh_seconds=3600)
    port = free_port()
    server = serve(collector, "127.0.0.1", port)
    try:
        first = _scrape(port)
        assert first["mlops_drift_share"] == [({"day": "2026-05-20"}, 0.25)]
        assert first["mlops_exporter_last_refresh_failed"][0][1] == 0
        assert "mlops_backfill_in_progress" in first  # declared even without samples
        _scrape(port)
        assert readings["count"] == 1  # the second scrape got the cached reading
        readings["fail"] = True
        collector.refresh(force=True)
        kept = _scrape(port)
        assert kept["mlops_drift_share"] == [({"day": "2026-05-20"}, 0.25)]
        assert kept["mlops_exporter_last_refresh_failed"][0][1] == 1
        assert kept["mlops_exporter_refresh_failures"][0][1] == 1
    finally:
        server.shutdown()


def test_an_undeclared_family_is_a_programming_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_assets.monitor import pipeline_reading

    monkeypatch.setattr(
        pipeline_reading, "_quality", lambda *_: iter([Sample("mlops_typo", (), 1)])
    )
    with dg.instance_for_test() as instance, pytest.raises(AssertionError, match="mlops_typo"):
        read_pipeline(instance, WATCHED)
