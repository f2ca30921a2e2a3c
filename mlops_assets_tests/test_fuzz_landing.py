"""Fuzzing a landing file through the real validation path (hypothesis).

The path of the ``raw_transactions`` / ``validated_transactions`` assets, without Dagster:
``load_day`` (``parse_delivered`` + lineage: a delivered file as text rows) and then
``apply_contract`` (the pandera contract splitting the rows into valid and quarantined).
Random and hostile CSV contents must either be refused with the project's clear error
(``DeliveryError``, naming the file) or be split without losing or inventing a row.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime

import polars as pl
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from mlops_assets.ingest.delivery import REQUIRED_COLUMNS, DeliveryError, load_day
from mlops_assets.resources.landing import LandingFile
from mlops_assets.validate.rules import apply_contract

DAY = date(2026, 1, 3)
EPOCH = date(2026, 1, 1)  # step 49..72 is DAY in an undated PaySim log
INGESTED_AT = datetime(2026, 1, 4, 6, 0)
NAMES = ("transactions_2026-01-03.csv", "paysim_log.csv")  # a dated file; a multi-day log

HOSTILE_CELLS = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "NaN",
            "nan",
            "inf",
            "-Infinity",
            "1e400",
            "-1e400",
            "9" * 400,
            "-0",
            "0x1F",
            "1_000",
            "1,5",
            "true",
            "null",
            "None",
            "50",
            "60",
            "TRANSFER",
            "CASH_OUT",
            "C123",
            "M9",
            "2026-01-03T10:00:00Z",
            "2026-01-03 25:61:00",
            "2026-02-30",
            '"',
            "\u202e\u0000",
            "ß漢字🙂",
        ]
    ),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)
COLUMN_NAMES = st.one_of(
    st.sampled_from([*REQUIRED_COLUMNS, "timestamp"]),
    st.sampled_from([" step", "amount ", "STEP", "", "_source_row", "_rules", "transaction_id"]),
    st.text(min_size=1, max_size=8),
)


PLAUSIBLE = {
    "step": st.integers(45, 75).map(str),  # mostly on DAY
    "type": st.sampled_from(["TRANSFER", "CASH_OUT", "PAYMENT", "DEBIT", "CASH_IN"]),
    "nameOrig": st.from_regex(r"C[0-9]{1,9}", fullmatch=True),
    "nameDest": st.from_regex(r"[CM][0-9]{1,9}", fullmatch=True),
    "isFraud": st.sampled_from(["0", "1"]),
    "isFlaggedFraud": st.sampled_from(["0", "1"]),
    "timestamp": st.integers(0, 23).map(lambda h: f"2026-01-03T{h:02d}:15:00Z"),
}
AMOUNT = st.floats(0, 1e7, allow_nan=False).map(lambda x: f"{x:.2f}")


def _cell(column: str, hostile: bool) -> st.SearchStrategy[str]:
    """A value the column could hold, or (in a hostile row) mostly that, else a hostile one."""
    plausible = PLAUSIBLE.get(column, AMOUNT if column in REQUIRED_COLUMNS else HOSTILE_CELLS)
    return st.one_of(plausible, plausible, HOSTILE_CELLS) if hostile else plausible


@st.composite
def csv_contents(draw: st.DrawFn) -> bytes:
    """A CSV with a plausible-to-hostile header (missing, extra, duplicated, padded columns) and
    rows of plausible and hostile cells, sometimes ragged; sometimes plain random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    header = list(REQUIRED_COLUMNS)
    if draw(st.booleans()):
        header.append("timestamp")
    header = draw(st.permutations(header))
    if draw(st.integers(0, 4)) == 0:
        header = header[: len(header) - draw(st.integers(1, 2))]  # a required column missing
    if draw(st.integers(0, 2)) == 0:
        header += draw(st.lists(COLUMN_NAMES, min_size=1, max_size=3))  # extra/duplicated/padded
    rows = []
    for _ in range(draw(st.integers(0, 8))):
        hostile = draw(st.booleans())
        row = [draw(_cell(column.strip(), hostile)) for column in header]
        if draw(st.integers(0, 5)) == 0:  # ragged: a cell short or one too many
            row = row[:-1] if draw(st.booleans()) else [*row, draw(HOSTILE_CELLS)]
        rows.append(row)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode(draw(st.sampled_from(["utf-8", "utf-8-sig"])))


def _through_the_contract(name: str, content: bytes) -> None:
    file = LandingFile(uri=f"file:///landing/{name}", name=name, size=len(content), mtime_ns=0)
    try:
        raw, sources, unassignable = load_day(DAY, [file], lambda _: content, EPOCH, INGESTED_AT)
    except DeliveryError as error:
        assert file.uri in str(error)  # the message names the file
        event(f"refused: {str(error).removeprefix(f'Landing file {file.uri} ')[:25]}")
        return
    assert unassignable >= 0
    if raw.height == 0:  # a log with no row on the day
        assert name == "paysim_log.csv"
        return
    assert set(sources) == {file.uri}
    outcome = apply_contract(raw, DAY, EPOCH)
    # no row lost, none invented, none in both outputs
    assert outcome.valid.height + outcome.quarantined.height == raw.height
    rows = pl.concat(
        [outcome.valid.select("_source_row"), outcome.quarantined.select("_source_row")]
    )
    assert sorted(rows.get_column("_source_row").to_list()) == sorted(
        raw.get_column("_source_row").to_list()
    )
    if outcome.quarantined.height:  # each quarantined row names the rule(s) it broke
        assert outcome.quarantined.get_column("_rules").list.len().min() >= 1
    event(f"split: {outcome.valid.height > 0=}, {outcome.quarantined.height > 0=}")
    assert sum(outcome.rejects_by_rule.values()) >= outcome.quarantined.height


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(NAMES), content=csv_contents())
@example(name=NAMES[0], content=b"")
@example(name=NAMES[0], content=(",".join(REQUIRED_COLUMNS) + "\n").encode())  # header only
@example(name=NAMES[0], content=(",".join([*REQUIRED_COLUMNS, "step"]) + "\n1" * 12).encode())
@example(name=NAMES[0], content=(",".join([*REQUIRED_COLUMNS, " step"]) + "\n").encode())
# a step far beyond year 9999 once turned into a timestamp (it made polars panic)
@example(
    name=NAMES[0],
    content=(",".join(REQUIRED_COLUMNS) + "\n" + ",".join(["1" + "0" * 15] + ["1"] * 10)).encode(),
)
def test_hostile_landing_file_is_refused_clearly_or_split_without_loss(
    name: str, content: bytes
) -> None:
    _through_the_contract(name, content)
