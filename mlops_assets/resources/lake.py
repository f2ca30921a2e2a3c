"""The Delta lake resource: date-partitioned Delta tables read and written with delta-rs."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field

from mlops_assets.tables import PARTITION_COLUMN, LakeTable
from mlops_assets.uris import join_uri, write_text

# pyarrow and delta-rs are imported in the methods: the code location imports this module
if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa
    import pyarrow.dataset as pa_ds
    from deltalake import CommitProperties, DeltaTable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionWrite:
    """What one atomic partition overwrite did: the new table version and its figures."""

    table_uri: str
    version: int
    rows: int
    operation_metrics: dict[str, Any]

    def metadata(self, schema: pa.Schema | dg.TableSchema) -> dict[str, Any]:
        """Dagster metadata for the UI: rows, Delta version, location and schema."""
        return {
            "dagster/row_count": self.rows,
            "delta_version": self.version,
            "table_uri": dg.MetadataValue.path(self.table_uri),
            "dagster/column_schema": (
                schema if isinstance(schema, dg.TableSchema) else column_schema(schema)
            ),
            "delta_operation_metrics": dg.MetadataValue.json(self.operation_metrics),
        }


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    """Arrow schema as a Dagster table schema (shown in the asset's Columns tab)."""
    return dg.TableSchema(
        columns=[dg.TableColumn(name=f.name, type=_type_name(f.type)) for f in schema]
    )


def _type_name(arrow_type: pa.DataType) -> str:
    """How a column's type reads in the UI (Delta stores every text layout as ``string``)."""
    import pyarrow as pa

    if arrow_type in (pa.string_view(), pa.large_string()):
        return "string"
    return str(arrow_type)


#: rows per record batch handed to the Delta writer
WRITE_BATCH_ROWS = 262_144


def in_write_batches(data: pa.Table) -> pa.RecordBatchReader:
    """``data`` as a stream of record batches of at most ``WRITE_BATCH_ROWS`` rows, for
    ``write_deltalake``. A table made from a polars frame is often one chunk of all its rows,
    and delta-rs converts and encodes a batch at a time: a 5M-row day written as one chunk
    peaked at 4.0 GiB and took 18 s, in 262,144-row batches 2.7 GiB and 8 s (measured)."""
    return data.to_reader(max_chunksize=WRITE_BATCH_ROWS)


class DeltaLake(dg.ConfigurableResource):
    """Delta tables under one root URI (a local path or an object-store URI).

    Every table is partitioned by ``txn_date``; writing a day replaces exactly that day in one
    Delta commit, so a crashed write leaves the previous version readable.
    """

    root_uri: str
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="delta-rs / object_store options of an object-store root, e.g. "
        "AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP "
        "(empty: the standard AWS environment); reports are written with the same options.",
    )
    compression: str = Field(
        "LZ4_RAW",
        description="Parquet compression of written files: LZ4_RAW (fast to write and read), "
        "SNAPPY, ZSTD (smallest) or UNCOMPRESSED; readers of every codec are in Spark 4, "
        "DuckDB, polars and pyarrow.",
    )

    batch_rows: int = Field(
        1_000_000,
        gt=0,
        description="Rows a run over a range of days (a backfill) holds and writes per Delta "
        "commit: its days are read, checked and written in batches of about this many rows "
        "(a day larger than that is a batch of its own), so memory stays bounded and a year "
        "is a few commits per table rather than one per day.",
    )

    def table_uri(self, table: LakeTable) -> str:
        return join_uri(self.root_uri, table.path)

    def report_uri(self, *parts: str) -> str:
        """Location of a file in the lake's reports area (``<root>/reports/...``)."""
        return join_uri(self.root_uri, "reports", *parts)

    def write_report(self, text: str, *parts: str) -> str:
        uri = self.report_uri(*parts)
        write_text(uri, text, self.storage_options)
        return uri

    def _open(self, table: LakeTable, version: int | None = None) -> DeltaTable | None:
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(
                self.table_uri(table), version=version, storage_options=self.storage_options or None
            )
        except TableNotFoundError:
            return None

    def exists(self, table: LakeTable) -> bool:
        return self._open(table) is not None

    def version(self, table: LakeTable) -> int | None:
        delta = self._open(table)
        return None if delta is None else delta.version()

    def read(
        self,
        table: LakeTable,
        days: Sequence[date] | None = None,
        columns: list[str] | None = None,
        version: int | None = None,
    ) -> pa.Table:
        """Read a table (optionally some days, some columns, or a pinned version)."""
        delta = self._open(table, version)
        if delta is None:
            raise FileNotFoundError(
                f"Delta table {table.path} does not exist at {self.table_uri(table)}: "
                "materialize it first"
            )
        filters = None
        if days is not None:
            if not days:
                return delta.to_pyarrow_table(columns=columns).slice(0, 0)
            filters = [(PARTITION_COLUMN, "in", [d.isoformat() for d in days])]
        return delta.to_pyarrow_table(columns=columns, filters=filters)

    def dataset(self, table: LakeTable, version: int | None = None) -> pa_ds.Dataset:
        """The table (at ``version``) as a pyarrow dataset, to read in batches of rows."""
        delta = self._open(table, version)
        if delta is None:
            raise FileNotFoundError(
                f"Delta table {table.path} does not exist at {self.table_uri(table)}: "
                "materialize it first"
            )
        return delta.to_pyarrow_dataset()

    def read_frame(
        self,
        table: LakeTable,
        days: Sequence[date],
        columns: list[str] | None = None,
        version: int | None = None,
    ) -> pl.DataFrame:
        """Some days of a table as a polars DataFrame, read by polars' multi-threaded Parquet
        reader (about 3x faster than ``read`` on a day of 1M text rows)."""
        import polars as pl

        if self._open(table, version) is None:
            raise FileNotFoundError(
                f"Delta table {table.path} does not exist at {self.table_uri(table)}: "
                "materialize it first"
            )
        frame = pl.scan_delta(
            self.table_uri(table),
            version=version,
            storage_options=self.storage_options or None,
        ).filter(pl.col(PARTITION_COLUMN).is_in(list(days)))
        if columns is not None:
            frame = frame.select(columns)
        return frame.collect()

    def column_names(self, table: LakeTable) -> list[str]:
        """The table's columns (empty when it does not exist)."""
        delta = self._open(table)
        return [] if delta is None else [f.name for f in delta.schema().fields]

    def transaction_versions(
        self, table: LakeTable, app_ids: Sequence[str]
    ) -> dict[str, int | None]:
        """The latest version of each application transaction id (Delta's ``txn`` action)."""
        delta = self._open(table)
        return {a: None if delta is None else delta.transaction_version(a) for a in app_ids}

    def days(self, table: LakeTable) -> list[date]:
        """The days (partitions) present in the table, sorted."""
        delta = self._open(table)
        if delta is None:
            return []
        values = {p[PARTITION_COLUMN] for p in delta.partitions()}
        return sorted(date.fromisoformat(v) for v in values if v)

    def day_rows(self, table: LakeTable, days: Sequence[date]) -> dict[date, int]:
        """Rows of each of ``days`` in the table's current version (0 when absent), from the
        Delta log's file statistics: nothing is read."""
        import pyarrow as pa
        import pyarrow.compute as pc

        counts = dict.fromkeys(days, 0)
        delta = self._open(table)
        if delta is None or not days:
            return counts
        actions = pa.table(delta.get_add_actions(flatten=True))
        column = f"partition.{PARTITION_COLUMN}"
        if column not in actions.column_names:
            return counts
        grouped = (
            actions.select([column, "num_records"])
            .filter(pc.is_in(actions.column(column), pa.array(list(days), pa.date32())))
            .group_by(column)
            .aggregate([("num_records", "sum")])
        )
        for day, rows in zip(
            grouped.column(column).to_pylist(),
            grouped.column("num_records_sum").to_pylist(),
            strict=True,
        ):
            counts[day] = int(rows or 0)
        return counts

    def overwrite_day(
        self, table: LakeTable, data: pa.Table, day: date, only_rows: str | None = None
    ) -> PartitionWrite:
        """Atomically replace one day of ``table`` with ``data`` (which may be empty).

        Rows must all belong to ``day``; the partition column is cast to ``date32`` so that the
        predicate and the column always agree (see DESIGN.md's partition-overwrite trap).
        ``only_rows`` (SQL) limits what is replaced to the day's rows that match it.
        """
        return self.overwrite_days(table, _with_partition_column(data, day), day, day, only_rows)

    def overwrite_days(
        self,
        table: LakeTable,
        data: pa.Table,
        first: date,
        last: date,
        only_rows: str | None = None,
    ) -> PartitionWrite:
        """Atomically replace the days ``first``..``last`` of ``table`` in one Delta commit
        (of those days, only the rows matching the SQL condition ``only_rows``, when given:
        the new rows must match it too).

        ``data`` carries its ``txn_date``; a row outside the range is refused before anything is
        written.
        """
        data = _date_partition_column(data, first, last)
        predicate = (
            f"{PARTITION_COLUMN} >= '{first.isoformat()}' AND "
            f"{PARTITION_COLUMN} <= '{last.isoformat()}'"
        )
        return self._replace(table, data, predicate, only_rows)

    def overwrite_dates(
        self,
        table: LakeTable,
        data: pa.Table,
        days: Sequence[date],
        only_rows: str | None = None,
    ) -> PartitionWrite:
        """Atomically replace exactly ``days`` of ``table`` (any set of days: a backfill's batch,
        without the days it holds back) in one Delta commit; the other days are not touched.

        ``data`` carries its ``txn_date``; a row of another day is refused before anything is
        written. ``only_rows`` as in ``overwrite_days``.
        """
        chosen = sorted(set(days))
        if not chosen:
            raise ValueError(f"no days given to replace in {table.path}")
        data = _date_partition_column(data, chosen[0], chosen[-1], chosen)
        listed = ", ".join(f"'{day.isoformat()}'" for day in chosen)
        return self._replace(table, data, f"{PARTITION_COLUMN} IN ({listed})", only_rows)

    def _replace(
        self, table: LakeTable, data: pa.Table, days_predicate: str, only_rows: str | None
    ) -> PartitionWrite:
        from deltalake import DeltaTable, WriterProperties, write_deltalake

        uri = self.table_uri(table)
        properties = WriterProperties(compression=self.compression)
        if self._open(table) is None:
            # a new table: nothing to replace, and a plain append that creates it is about
            # twice as fast as a predicate overwrite (a concurrent creator makes it conflict,
            # never overwrite)
            write_deltalake(
                uri,
                in_write_batches(data),
                mode="append",
                partition_by=[PARTITION_COLUMN],
                writer_properties=properties,
                storage_options=self.storage_options or None,
            )
        else:
            write_deltalake(
                uri,
                in_write_batches(data),
                mode="overwrite",
                partition_by=[PARTITION_COLUMN],
                predicate=days_predicate + (f" AND ({only_rows})" if only_rows else ""),
                schema_mode="merge",
                writer_properties=properties,
                storage_options=self.storage_options or None,
            )
        delta = DeltaTable(uri, storage_options=self.storage_options or None)
        last_commit = delta.history(1)[0]
        return PartitionWrite(
            table_uri=uri,
            version=delta.version(),
            rows=data.num_rows,
            operation_metrics=dict(last_commit.get("operationMetrics", {})),
        )

    def append(self, table: LakeTable, data: pa.Table) -> int:
        """Append rows (carrying their ``txn_date``) in one Delta commit; returns the version.

        Appends never conflict with each other, so several writers (service replicas) can
        append to one table at once. A writer that appends again and again uses ``appender``.
        """
        return self.appender(table)(data)

    def day_files(self, table: LakeTable, day: date) -> int:
        """How many data files hold ``day`` of ``table`` (0 when the table does not exist)."""
        delta = self._open(table)
        if delta is None:
            return 0
        return len(delta.file_uris(partition_filters=[(PARTITION_COLUMN, "=", day.isoformat())]))

    def compact_day(self, table: LakeTable, day: date) -> dict[str, Any]:
        """Rewrite the small files of ``day`` into as few as Delta's target file size allows,
        in one commit: readers see the same rows before and after, and appends made meanwhile
        are kept. Returns Delta's metrics (``numFilesAdded``, ``numFilesRemoved``, ...)."""
        from deltalake import WriterProperties

        delta = self._open(table)
        if delta is None:
            raise FileNotFoundError(
                f"Delta table {table.path} does not exist at {self.table_uri(table)}"
            )
        return delta.optimize.compact(
            partition_filters=[(PARTITION_COLUMN, "=", day.isoformat())],
            writer_properties=WriterProperties(compression=self.compression),
        )

    def vacuum(self, table: LakeTable) -> list[str]:
        """Delete the files no version of ``table`` within its retention period reads (Delta's
        ``deletedFileRetentionDuration``, a week by default); returns the deleted files."""
        delta = self._open(table)
        return [] if delta is None else delta.vacuum(dry_run=False)

    def appender(self, table: LakeTable, compact_every: int = 0) -> DeltaAppender:
        """Appends to ``table`` like ``append``, keeping the table open between appends, and
        compacting a day after every ``compact_every`` appends to it (0: never)."""
        return DeltaAppender(self, table, compact_every)

    def history(self, table: LakeTable, limit: int = 20) -> list[dict[str, Any]]:
        """The table's latest commits (version, time, operation, parameters, metrics)."""
        delta = self._open(table)
        return [] if delta is None else delta.history(limit)


class DeltaAppender:
    """Appends rows to one table again and again (the model service's prediction log), each
    append one Delta commit, keeping the table open in between; optionally compacts a day once
    it has had ``compact_every`` appends.

    Opening a table reads its log from the last checkpoint; the open table instead catches up
    with what other writers committed (a few log entries) before it appends, and after a failed
    append it is opened afresh. An append costs more the more files the table holds
    (``bench/log_append_bench.py``, 1,000-row appends: 13 ms on a new table, 165 ms at 1,200
    files), and a service writing every 5 s adds 17,000 files a day; so every
    ``compact_every`` appends to a day, that day's files are rewritten into a few (Delta's
    optimize, one commit; concurrent appends are kept): appends then stay at 16-25 ms. A
    compaction that fails (another replica compacting the same day, say) is logged and tried
    again after the next ``compact_every`` appends; it never fails the append. Not
    thread-safe: one writer thread per appender.
    """

    def __init__(self, lake: DeltaLake, table: LakeTable, compact_every: int = 0) -> None:
        if compact_every < 0:
            raise ValueError(f"compact_every must be 0 (never) or more, not {compact_every}")
        self.lake = lake
        self.table = table
        self.compact_every = compact_every
        self.compactions = 0
        self.failed_compactions = 0
        self._delta: DeltaTable | None = None
        self._appends: dict[date, int] = {}

    def transaction_versions(self, app_ids: Sequence[str]) -> dict[str, int | None]:
        """The latest version of each application transaction id (Delta's ``txn`` action) at
        the table's newest version (None for an id never committed or a missing table).

        An append with ``refresh=False`` right after commits on this same snapshot, so a
        concurrent commit of one of these ids makes it fail instead of being missed."""
        self._refresh()
        delta = self._delta
        return {
            app_id: None if delta is None else delta.transaction_version(app_id)
            for app_id in app_ids
        }

    def _refresh(self) -> None:
        try:
            if self._delta is None:
                self._delta = self.lake._open(self.table)
            else:
                self._delta.update_incremental()
        except Exception:
            self._delta = None
            raise

    def __call__(
        self,
        data: pa.Table,
        commit_properties: CommitProperties | None = None,
        refresh: bool = True,
    ) -> int:
        """Append ``data`` (with its ``txn_date`` column) in one commit, with
        ``commit_properties`` (custom metadata, application transactions); returns the version
        committed. ``refresh=False`` commits on the snapshot read last (by
        ``transaction_versions``)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        from deltalake import WriterProperties, write_deltalake

        if PARTITION_COLUMN not in data.column_names:
            raise ValueError(f"rows appended to {self.table.path} need a {PARTITION_COLUMN} column")
        try:
            if refresh or self._delta is None:
                self._refresh()
            write_deltalake(
                self._delta if self._delta is not None else self.lake.table_uri(self.table),
                in_write_batches(data),
                mode="append",
                partition_by=[PARTITION_COLUMN],
                schema_mode="merge",
                configuration=dict(self.table.properties) if self._delta is None else None,
                writer_properties=WriterProperties(compression=self.lake.compression),
                storage_options=self.lake.storage_options or None,
                commit_properties=commit_properties,
            )
            if self._delta is None:  # created by this append
                self._delta = self.lake._open(self.table)
                assert self._delta is not None
            version = self._delta.version()
        except Exception:
            self._delta = None
            raise
        if self.compact_every:
            days = pc.unique(data.column(PARTITION_COLUMN).cast(pa.date32())).to_pylist()
            for day in days:
                self._appends[day] = self._appends.get(day, 0) + 1
                if self._appends[day] >= self.compact_every:
                    self._appends[day] = 0
                    self._compact(day)
        return version

    def _compact(self, day: date) -> None:
        from deltalake import WriterProperties

        started = time.perf_counter()
        try:
            assert self._delta is not None
            metrics = self._delta.optimize.compact(
                partition_filters=[(PARTITION_COLUMN, "=", day.isoformat())],
                writer_properties=WriterProperties(compression=self.lake.compression),
            )
        except Exception as error:
            self.failed_compactions += 1
            self._delta = None  # opened afresh for the next append
            log.warning(
                "%s: compacting %s failed (tried again after %d more appends): %s: %s",
                self.table.path,
                day,
                self.compact_every,
                type(error).__name__,
                error,
            )
            return
        self.compactions += 1
        log.info(
            "%s: compacted %s, %d file(s) into %d in %.0f ms",
            self.table.path,
            day,
            metrics.get("numFilesRemoved", 0),
            metrics.get("numFilesAdded", 0),
            (time.perf_counter() - started) * 1000.0,
        )


def _date_partition_column(
    data: pa.Table, first: date, last: date, days: Sequence[date] | None = None
) -> pa.Table:
    """``data`` with its partition column as ``date32``; refuses rows outside ``first..last``
    (or, given ``days``, outside those days)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    index = data.column_names.index(PARTITION_COLUMN)
    dates = data.column(PARTITION_COLUMN).cast(pa.date32())
    if days is None:
        low, high = pa.scalar(first, pa.date32()), pa.scalar(last, pa.date32())
        outside = pc.sum(pc.or_(pc.less(dates, low), pc.greater(dates, high))).as_py() or 0
        span = first.isoformat() if first == last else f"{first}..{last}"
    else:
        allowed = pa.array(sorted(set(days)), pa.date32())
        outside = pc.sum(pc.invert(pc.is_in(dates, allowed))).as_py() or 0
        span = ", ".join(day.isoformat() for day in sorted(set(days)))
    if outside:
        raise ValueError(
            f"{outside} row(s) have {PARTITION_COLUMN} outside {span}; "
            "refusing to write them into those partitions"
        )
    return data.set_column(index, PARTITION_COLUMN, dates)


def _with_partition_column(data: pa.Table, day: date) -> pa.Table:
    """``data`` with a ``txn_date`` column: added as ``day`` when absent, kept otherwise."""
    import pyarrow as pa

    if PARTITION_COLUMN in data.column_names:
        return data
    return data.append_column(PARTITION_COLUMN, pa.array([day] * data.num_rows, pa.date32()))
