"""The platform's log lines: plain text on a laptop, one JSON object per line in production.

``MLOPS_LOG_FORMAT`` (``text`` or ``json``) chooses; :func:`configure_logging` sets up the root
logger of a process (the model service, the streaming consumers, the exporter) with it, and
:class:`DagsterJsonFormatter`, set on the Dagster instance by
:data:`DAGSTER_JSON_HANDLER_CONFIG` (``python_logs`` in dagster.yaml: Compose and the Helm values
set it), renders every run's lines that leave Dagster (a step pod's stdout) as JSON with their
run, job, step, asset and partition. Fields passed with ``extra={...}`` (``request_id``,
``model_version``, ``latency_ms``...) become JSON keys, or ``key=value`` pairs after the text.

Rendering is structlog's :class:`~structlog.stdlib.ProcessorFormatter` over the standard
``logging`` records, so every library that logs through ``logging`` is rendered the same way.
:func:`library_output_to` sends what the libraries write to standard error into a file (the
demo's console stays its own progress).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import structlog

from mlops_assets.settings import LogFormat

#: the loggers of the clients, quieter than the platform's own
QUIET_LOGGERS = ("httpx", "httpx2", "httpcore", "mlops_assets.kafka", "urllib3")


def _render_text(_: Any, __: str, event: dict[str, Any]) -> str:
    """``2026-05-20T10:00:00.123Z INFO name: message key=value ...``, then any traceback."""
    timestamp = event.pop("timestamp", "")
    level = str(event.pop("level", "")).upper()
    name = event.pop("logger", "")
    message = event.pop("event", "")
    exception = event.pop("exception", None)
    extras = " ".join(f"{key}={value}" for key, value in event.items())
    line = f"{timestamp} {level} {name}: {message}" + (f" {extras}" if extras else "")
    return f"{line}\n{exception}" if exception else line


def _pre_chain() -> list[Any]:
    return [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.stdlib.ExtraAdder(),
    ]


def formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter of ``log_format`` for standard ``logging`` records."""
    renderer: Any = (
        structlog.processors.JSONRenderer(default=str) if log_format == "json" else _render_text
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_pre_chain(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )


def configure_logging(level: int = logging.INFO, log_format: LogFormat = "text") -> None:
    """One handler on the root logger, to stderr, in ``log_format`` (the processes pass
    ``Settings().log_format``, i.e. ``MLOPS_LOG_FORMAT``); the clients' HTTP and librdkafka
    chatter only from warnings up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def library_output_to(log_path: Path) -> Iterator[Path]:
    """Point this process's standard error (file descriptor 2) at ``log_path`` for the block.

    What the libraries write there lands in the file instead of between a command's progress
    lines on the console: TensorFlow's and abseil's C++ log lines (``E0000 ...``, written
    straight to descriptor 2, which no Python setting reaches), Python warnings, the
    libraries' loggers, the servers started meanwhile, and the console logger of the Dagster
    runs executed in the process (a blocked gate's ``STEP_FAILURE``). Standard output stays
    the console's. Descriptor 2 is restored on the way out, also when the block raises, so a
    failure's message and traceback reach the console.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    python_stderr = sys.stderr
    python_stderr.flush()
    console = os.dup(2)
    log = open(log_path, "w", buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
    try:
        os.dup2(log.fileno(), 2)
        sys.stderr = log  # also where ``sys.stderr`` is not descriptor 2 (pytest's capture)
        yield log_path
    finally:
        sys.stderr = python_stderr
        log.flush()
        os.dup2(console, 2)
        os.close(console)
        log.close()


# --- Dagster ------------------------------------------------------------------------------


def dagster_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What a Dagster log record says about where it comes from: run, job, step, asset and
    partition (a day, or the first and last day of a range), and the event type."""
    meta = getattr(record, "dagster_meta", None)
    if not isinstance(meta, Mapping):
        return {}
    tags = meta.get("job_tags") or {}
    fields: dict[str, Any] = {
        "run_id": meta.get("run_id"),
        "job": meta.get("job_name"),
        "step": meta.get("step_key"),
    }
    event = meta.get("dagster_event")
    asset_key = getattr(event, "asset_key", None) if event is not None else None
    if asset_key is not None:
        fields["asset"] = asset_key.to_user_string()
    elif meta.get("step_key"):
        fields["asset"] = meta["step_key"]
    partition = tags.get("dagster/partition")
    if partition:
        fields["partition"] = partition
    elif tags.get("dagster/asset_partition_range_start"):
        start = tags["dagster/asset_partition_range_start"]
        end = tags.get("dagster/asset_partition_range_end", start)
        fields["partition"] = start if start == end else f"{start}...{end}"
    if event is not None:
        fields["event_type"] = event.event_type_value
    return {key: value for key, value in fields.items() if value is not None}


class DagsterJsonFormatter(logging.Formatter):
    """A Dagster record as one JSON line: the original message and :func:`dagster_fields`."""

    def __init__(self) -> None:
        super().__init__()
        self._json = formatter("json")

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None)
        copy = logging.makeLogRecord(record.__dict__)
        if isinstance(meta, Mapping):
            copy.msg, copy.args = meta.get("orig_message", record.getMessage()), None
        for key, value in dagster_fields(record).items():
            setattr(copy, key, value)
        for internal in ("dagster_meta", "dagster_event", "dagster_event_batch_metadata"):
            copy.__dict__.pop(internal, None)
        return self._json.format(copy)


#: the Dagster instance's ``python_logs`` setting (dagster.yaml) that adds a JSON handler to the
#: log manager of every run: each line of the run's steps as one JSON object on stdout
DAGSTER_JSON_HANDLER_CONFIG: dict[str, Any] = {
    "dagster_handler_config": {
        "handlers": {
            "json_console": {
                "class": "logging.StreamHandler",
                "formatter": "mlops_json",
                "stream": "ext://sys.stdout",
            }
        },
        "formatters": {"mlops_json": {"()": "mlops_assets.logs.DagsterJsonFormatter"}},
    }
}
