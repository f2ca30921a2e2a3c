"""What the landing sensor requests for the files it sees (pure logic, real files)."""

from __future__ import annotations

import os
import time
from datetime import date
from pathlib import Path

import polars as pl

from mlops_assets.datagen import GeneratorConfig, generate_day, write_day
from mlops_assets.ingest.landing_scan import load_cursor, scan
from mlops_assets.resources.landing import LandingZone

EPOCH = FIRST = date(2026, 1, 1)
LAST = date(2026, 1, 10)
CONFIG = GeneratorConfig(rows_per_day=50, seed=1)


def run_scan(landing: Path, previous=None, settle: float = 0.0, now_ns: int | None = None):
    zone = LandingZone(uri=str(landing))
    return scan(
        files=zone.list_files(),
        previous=previous or {},
        read=zone.read_bytes,
        now_ns=now_ns or time.time_ns(),
        settle_seconds=settle,
        first_day=FIRST,
        last_day=LAST,
        epoch=EPOCH,
    )


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_new_files_request_their_day_once(tmp_path: Path) -> None:
    for day in (date(2026, 1, 2), date(2026, 1, 3)):
        write_day(day, CONFIG, tmp_path)
    first = run_scan(tmp_path)
    assert [r.day for r in first.requests] == [date(2026, 1, 2), date(2026, 1, 3)]
    assert len({r.run_key for r in first.requests}) == 2
    again = run_scan(tmp_path, previous=load_cursor(first.cursor()))
    assert again.requests == [] and again.notes == []


def test_identical_redelivery_is_a_noop_and_a_correction_reprocesses(tmp_path: Path) -> None:
    path = write_day(date(2026, 1, 2), CONFIG, tmp_path)
    first = run_scan(tmp_path)
    # the same bytes delivered again (new mtime)
    path.write_bytes(path.read_bytes())
    age(path, 5)
    redelivered = run_scan(tmp_path, previous=load_cursor(first.cursor()))
    assert redelivered.requests == []
    assert "identical content" in redelivered.notes[0]
    # a corrected file for the same day
    generate_day(date(2026, 1, 2), GeneratorConfig(rows_per_day=60, seed=1)).write_csv(path)
    corrected = run_scan(tmp_path, previous=load_cursor(redelivered.cursor()))
    assert [r.day for r in corrected.requests] == [date(2026, 1, 2)]
    assert corrected.requests[0].run_key != first.requests[0].run_key


def test_files_still_being_written_wait(tmp_path: Path) -> None:
    path = write_day(date(2026, 1, 2), CONFIG, tmp_path)
    waiting = run_scan(tmp_path, settle=60)
    assert waiting.requests == [] and "still being written" in waiting.notes[0]
    assert waiting.cursor() == {}  # looked at again next time
    age(path, 120)
    assert len(run_scan(tmp_path, previous=load_cursor(waiting.cursor()), settle=60).requests) == 1


def test_out_of_range_and_badly_named_files_are_reported_not_requested(tmp_path: Path) -> None:
    early = GeneratorConfig(rows_per_day=50, seed=1, epoch=date(2025, 12, 1))
    write_day(date(2025, 12, 30), early, tmp_path)
    write_day(date(2026, 1, 20), CONFIG, tmp_path)
    (tmp_path / "transactions_2026-02-30.csv").write_text("step\n1\n")
    result = run_scan(tmp_path)
    assert result.requests == []
    notes = "\n".join(result.notes)
    assert "before the first partition 2026-01-01" in notes
    assert "have not ended yet" in notes
    assert "'2026-02-30' in its name is not a valid date" in notes
    # the future file is looked at again later; the others are remembered
    assert not any("2026-01-20" in uri for uri in result.cursor())
    assert len(result.cursor()) == 2


def test_an_undated_paysim_log_requests_every_day_it_covers(tmp_path: Path) -> None:
    log = pl.concat([generate_day(date(2026, 1, d), CONFIG) for d in (2, 3)]).drop("timestamp")
    log.write_csv(tmp_path / "paysim_log.csv")
    result = run_scan(tmp_path)
    assert [r.day for r in result.requests] == [date(2026, 1, 2), date(2026, 1, 3)]
