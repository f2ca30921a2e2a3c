"""What the landing sensor should do with the files it sees: pure logic, no Dagster.

A file is requested (one run per day it holds) when it is new or its content changed; a
re-delivered identical file is a no-op. Files still being written (modified less than
``settle_seconds`` ago) are left for a later tick, as are files for days that have not ended
yet; files for days before the first partition or with a bad date in their name are reported.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta

from mlops_assets.ingest.delivery import DeliveryError, content_digest, file_day
from mlops_assets.resources.landing import LandingFile


@dataclass(frozen=True)
class SeenFile:
    """What the sensor remembers of a file: enough to notice a change without re-reading it."""

    size: int
    mtime_ns: int
    digest: str


@dataclass(frozen=True)
class DayRequest:
    """Ingest ``day`` because of ``uri`` (whose content has ``digest``)."""

    day: date
    uri: str
    digest: str

    @property
    def run_key(self) -> str:
        return f"{self.day.isoformat()}:{self.uri}:{self.digest[:16]}"


@dataclass
class ScanResult:
    requests: list[DayRequest] = field(default_factory=list)
    seen: dict[str, SeenFile] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def cursor(self) -> dict[str, dict[str, object]]:
        return {uri: asdict(state) for uri, state in sorted(self.seen.items())}


def load_cursor(raw: dict[str, dict[str, object]] | None) -> dict[str, SeenFile]:
    return {uri: SeenFile(**state) for uri, state in (raw or {}).items()}  # type: ignore[arg-type]


def log_days(content: bytes, name: str, epoch: date) -> set[date]:
    """The days an undated PaySim log covers, from its ``step`` column."""
    import polars as pl

    if name.lower().endswith(".parquet"):
        steps = pl.read_parquet(io.BytesIO(content), columns=["step"])["step"]
    else:
        steps = pl.read_csv(io.BytesIO(content), columns=["step"], infer_schema=False)["step"]
    numbers = steps.cast(pl.Utf8).str.strip_chars().cast(pl.Int64, strict=False).drop_nulls()
    return {epoch + timedelta(days=(int(s) - 1) // 24) for s in numbers.unique() if s >= 1}


def scan(
    files: list[LandingFile],
    previous: dict[str, SeenFile],
    read: Callable[[LandingFile], bytes],
    now_ns: int,
    settle_seconds: float,
    first_day: date,
    last_day: date | None,
    epoch: date,
) -> ScanResult:
    """Decide which days to ingest for the files now in the landing zone."""
    result = ScanResult(seen=dict(previous))
    for file in files:
        known = previous.get(file.uri)
        if known and (known.size, known.mtime_ns) == (file.size, file.mtime_ns):
            continue
        age = (now_ns - file.mtime_ns) / 1e9
        if age < settle_seconds:
            result.notes.append(
                f"{file.uri}: modified {age:.1f}s ago, still being written? Waiting for it to "
                f"settle ({settle_seconds:g}s)."
            )
            continue
        content = read(file)
        digest = content_digest(content)
        if known and known.digest == digest:
            result.notes.append(f"{file.uri}: re-delivered with identical content; nothing to do")
            result.seen[file.uri] = SeenFile(file.size, file.mtime_ns, digest)
            continue
        try:
            dated = file_day(file)
            days = {dated} if dated else log_days(content, file.name, epoch)
        except DeliveryError as error:
            result.notes.append(f"{error}; skipped")
            result.seen[file.uri] = SeenFile(file.size, file.mtime_ns, digest)
            continue
        except Exception as error:  # an undated file whose steps cannot be read
            result.notes.append(f"{file.uri}: undated and its steps cannot be read ({error})")
            result.seen[file.uri] = SeenFile(file.size, file.mtime_ns, digest)
            continue
        if not days:
            result.notes.append(f"{file.uri}: undated and holds no valid step; skipped")
        early = sorted(d for d in days if d < first_day)
        future = sorted(d for d in days if last_day is not None and d > last_day)
        if early:
            result.notes.append(
                f"{file.uri}: day(s) {', '.join(map(str, early))} are before the first "
                f"partition {first_day}; skipped"
            )
        if future:
            result.notes.append(
                f"{file.uri}: day(s) {', '.join(map(str, future))} have not ended yet; the file "
                "will be ingested once they have"
            )
        for day in sorted(days - set(early) - set(future)):
            result.requests.append(DayRequest(day=day, uri=file.uri, digest=digest))
        if not future:
            result.seen[file.uri] = SeenFile(file.size, file.mtime_ns, digest)
    return result
