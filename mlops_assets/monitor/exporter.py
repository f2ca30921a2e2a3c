"""The pipeline exporter: Prometheus metrics of the Dagster instance and of the model's quality
(``mlops-assets exporter``, ``/metrics`` on ``MLOPS_EXPORTER_PORT``).

Scrapes are answered from the last reading (:mod:`pipeline_reading`), taken again when it is
older than ``MLOPS_EXPORTER_REFRESH_SECONDS``, so that many Prometheus replicas scraping every
15 s cost the instance's database one reading per interval. A reading that fails keeps the
previous figures and sets ``mlops_exporter_last_refresh_failed`` (the alert
``PipelineExporterFailing``); the exporter itself never stops serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mlops_assets.monitor.pipeline_reading import FAMILIES, Sample

log = logging.getLogger(__name__)


class PipelineCollector(Collector):
    """A Prometheus collector over ``read()`` (a function returning samples), cached for
    ``refresh_seconds``."""

    def __init__(self, read: Callable[[], list[Sample]], refresh_seconds: float = 15.0) -> None:
        self._read = read
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._samples: list[Sample] = []
        self._read_at: float | None = None  # never read yet
        self._succeeded_at = 0.0
        self._failed = False
        self._seconds = 0.0
        self._failures = 0

    def refresh(self, force: bool = False) -> None:
        with self._lock:
            fresh = (
                self._read_at is not None
                and time.monotonic() - self._read_at < self.refresh_seconds
            )
            if fresh and not force:
                return
            started = time.perf_counter()
            try:
                samples = self._read()
            except Exception as error:  # keep serving the last figures
                self._failed = True
                self._failures += 1
                log.warning("reading the Dagster instance failed: %s", error, exc_info=True)
            else:
                self._samples, self._failed = samples, False
                self._succeeded_at = time.time()
            self._seconds = time.perf_counter() - started
            self._read_at = time.monotonic()

    def collect(self) -> Iterator[Any]:
        self.refresh()
        families = {
            name: GaugeMetricFamily(name, help_text, labels=list(labels))
            for name, (help_text, labels) in FAMILIES.items()
        }
        for sample in self._samples:
            families[sample.name].add_metric(list(sample.labels), sample.value)
        yield from families.values()
        yield GaugeMetricFamily(
            "mlops_exporter_last_refresh_failed",
            "1 when the latest reading of the instance failed (figures are from the one before).",
            value=1.0 if self._failed else 0.0,
        )
        yield GaugeMetricFamily(
            "mlops_exporter_last_success_timestamp_seconds",
            "When the instance was last read successfully.",
            value=self._succeeded_at,
        )
        yield GaugeMetricFamily(
            "mlops_exporter_refresh_seconds", "Duration of the latest reading.", value=self._seconds
        )
        yield GaugeMetricFamily(
            "mlops_exporter_refresh_failures",
            "Readings that failed since the exporter started.",
            value=float(self._failures),
        )


def build_collector(settings: Any = None, instance: Any = None) -> PipelineCollector:
    """The collector over the Dagster instance (``DAGSTER_HOME``) and the code location."""
    import dagster as dg

    from mlops_assets.definitions import defs
    from mlops_assets.monitor.pipeline_reading import read_pipeline, watched_from_definitions
    from mlops_assets.settings import load_settings

    settings = settings or load_settings()
    watched = watched_from_definitions(defs, days=settings.exporter_days)
    instance = instance or dg.DagsterInstance.get()
    return PipelineCollector(
        lambda: read_pipeline(instance, watched), refresh_seconds=settings.exporter_refresh_seconds
    )


def serve(collector: PipelineCollector, host: str, port: int) -> Any:
    """Serve ``/metrics`` of ``collector`` from a background thread; returns the server."""
    registry = CollectorRegistry()
    registry.register(collector)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
