"""The silver ``validated_transactions`` and ``quarantined_transactions`` assets, and checks."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg

from mlops_assets.automation import DAILY_FRESHNESS, refresh_when_upstream_day_changes
from mlops_assets.partitions import (
    CheckEvent,
    checks_by_day,
    daily_partitions,
    day_batches,
    describe_days,
    partition_days,
)
from mlops_assets.resources.lake import DeltaLake, PartitionWrite
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.tables import (
    PARTITION_COLUMN,
    QUARANTINED_TRANSACTIONS,
    RAW_TRANSACTIONS,
    VALIDATED_TRANSACTIONS,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from mlops_assets.validate.rules import ContractOutcome

VALIDATED = dg.AssetKey("validated_transactions")
QUARANTINED = dg.AssetKey("quarantined_transactions")


@dataclass(frozen=True)
class DayCounts:
    """What the contract made of one day: the figures its checks and metadata report."""

    valid: int
    quarantined: int
    rejects_by_rule: dict[str, int]

    @classmethod
    def of(cls, outcome: "ContractOutcome") -> "DayCounts":
        return cls(outcome.valid.height, outcome.quarantined.height, outcome.rejects_by_rule)

    @property
    def reject_share(self) -> float:
        total = self.valid + self.quarantined
        return self.quarantined / total if total else 0.0


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            VALIDATED,
            deps=["raw_transactions"],
            description="Silver: the day's transactions that pass the pandera data contract, "
            "typed (amounts as floats, timestamps in UTC) with a `transaction_id` and their "
            "source file and row.",
            kinds={"delta", "pandera", "silver"},
            group_name="validate",
            automation_condition=refresh_when_upstream_day_changes(),
            freshness_policy=DAILY_FRESHNESS,
        ),
        dg.AssetSpec(
            QUARANTINED,
            deps=["raw_transactions"],
            description="Rejected rows of the day, exactly as delivered, each with the list of "
            "contract rules it broke (`_rules`). Nothing delivered is dropped: raw = validated + "
            "quarantined, row for row.",
            kinds={"delta", "pandera"},
            group_name="validate",
            automation_condition=refresh_when_upstream_day_changes(),
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            "reject_share_within_threshold",
            asset=VALIDATED,
            partitions_def=daily_partitions,
            blocking=True,
            description="Fails (and blocks the features) when the share of quarantined rows of "
            "a day exceeds the policy's max_reject_share (MLOPS_MAX_REJECT_SHARE).",
        ),
        dg.AssetCheckSpec(
            "reconciles_with_raw",
            asset=VALIDATED,
            partitions_def=daily_partitions,
            blocking=True,
            description="Validated + quarantined rows equal the raw rows of the day.",
        ),
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=False,
)
def validated_transactions(
    context: dg.AssetExecutionContext, lake: DeltaLake, policy: PipelinePolicy
) -> Iterator[dg.MaterializeResult | CheckEvent]:
    """Apply the data contract to the day's raw rows; split them into validated and quarantined."""
    # pandera and polars load with the step, not with the code location
    import polars as pl

    from mlops_assets.validate.contract import CONTRACT_VERSION, contract_hash, describe_contract
    from mlops_assets.validate.rules import apply_contract

    zero_copy = pl.CompatLevel.newest()  # polars' string layout, to the Delta writer uncopied
    days = partition_days(context)
    outcomes: dict[str, DayCounts] = {}
    raw_rows: dict[str, int] = {}
    valid_write: PartitionWrite | None = None
    quarantine_write: PartitionWrite | None = None
    blocked: list = []
    schemas: dict[str, pa.Schema] = {}
    # a range is read and written in batches of about lake.batch_rows raw rows (one commit per
    # table and batch); the contract is applied day by day
    batches = day_batches(days, lake.day_rows(RAW_TRANSACTIONS, days), lake.batch_rows)
    for batch in batches:
        raw_batch = lake.read_frame(RAW_TRANSACTIONS, days=batch)
        by_day = raw_batch.partition_by(PARTITION_COLUMN, as_dict=True)
        del raw_batch
        valid_parts: list[pl.DataFrame] = []
        quarantine_parts: list[pl.DataFrame] = []
        for day in batch:
            raw = by_day.pop((day,), None)
            if raw is None or raw.height == 0:
                raise dg.Failure(
                    description=f"raw_transactions has no rows for {day}: materialize it first"
                )
            outcome = apply_contract(raw.drop(PARTITION_COLUMN), day, policy.epoch)
            on_day = pl.lit(day).alias(PARTITION_COLUMN)
            quarantine_parts.append(outcome.quarantined.with_columns(on_day))
            if outcome.reject_share > policy.max_reject_share:
                # blocked: the rejects are in quarantine, the day's silver rows are held back
                blocked.append(day)
            else:
                valid_parts.append(outcome.valid.with_columns(on_day))
            outcomes[day.isoformat()] = DayCounts.of(outcome)
            raw_rows[day.isoformat()] = raw.height
        quarantined_table = pl.concat(quarantine_parts, how="diagonal_relaxed").to_arrow(
            compat_level=zero_copy
        )
        schemas["quarantined"] = quarantined_table.schema
        if not valid_parts:
            quarantine_write = lake.overwrite_dates(
                QUARANTINED_TRANSACTIONS, quarantined_table, batch
            )
            continue
        valid_table = pl.concat(valid_parts, how="diagonal_relaxed").to_arrow(
            compat_level=zero_copy
        )
        schemas["valid"] = valid_table.schema
        held_back = set(blocked)
        # the two tables are written side by side (delta-rs releases the GIL)
        with ThreadPoolExecutor(max_workers=2) as pool:
            pending = pool.submit(
                lake.overwrite_dates, QUARANTINED_TRANSACTIONS, quarantined_table, batch
            )
            valid_write = lake.overwrite_dates(
                VALIDATED_TRANSACTIONS, valid_table, [d for d in batch if d not in held_back]
            )
            quarantine_write = pending.result()
    valid_total = sum(c.valid for c in outcomes.values())
    quarantined_total = sum(c.quarantined for c in outcomes.values())
    context.log.info(
        f"{describe_days(days)}: {valid_total} valid, {quarantined_total} quarantined "
        f"in {len(batches)} batch(es)"
        + (f"; held back {', '.join(d.isoformat() for d in blocked)}" if blocked else "")
    )
    assert quarantine_write is not None
    summary = _summary(outcomes, raw_rows)
    contract = {"contract_version": CONTRACT_VERSION, "contract_hash": contract_hash()}
    span = {"days": describe_days(days)}
    yield dg.MaterializeResult(
        asset_key=QUARANTINED,
        metadata={
            **quarantine_write.metadata(schemas["quarantined"]),
            **contract,
            **span,
            "dagster/row_count": summary["quarantined"],
            "rejects_by_rule": dg.MetadataValue.json(summary["rejects_by_rule"]),
            "reject_share": summary["reject_share"],
        },
    )
    if blocked:
        yield from _checks(context, outcomes, raw_rows, policy, blocked)
        shares = ", ".join(f"{d} ({summary['share_by_day'][d.isoformat()]:.1%})" for d in blocked)
        raise dg.Failure(
            description=f"Reject share above MLOPS_MAX_REJECT_SHARE={policy.max_reject_share:.1%} "
            f"on {shares}: the rejected rows are in quarantined_transactions with their rules; "
            "the day's validated rows are held back so that it does not flow into features. "
            "Fix the delivery (or raise the threshold) and materialize the day again.",
            allow_retries=False,
        )
    assert valid_write is not None
    yield dg.MaterializeResult(
        asset_key=VALIDATED,
        metadata={
            **valid_write.metadata(schemas["valid"]),
            **contract,
            **span,
            "dagster/row_count": summary["valid"],
            "raw_rows": summary["raw"],
            "reject_share": summary["reject_share"],
            "reject_share_by_day": dg.MetadataValue.json(summary["share_by_day"]),
            "contract_rules": dg.MetadataValue.json(describe_contract()),
        },
    )
    yield from _checks(context, outcomes, raw_rows, policy, blocked)


def _checks(
    context: dg.AssetExecutionContext,
    outcomes: dict[str, DayCounts],
    raw_rows: dict[str, int],
    policy: PipelinePolicy,
    blocked: list,
) -> Iterator[CheckEvent]:
    """Both checks of every day of the run, each recorded against its day."""
    blocked_days = {d.isoformat() for d in blocked}
    by_day = {
        day: _day_checks(outcome, raw_rows[day], policy, day in blocked_days)
        for day, outcome in outcomes.items()
    }
    yield from checks_by_day(context, VALIDATED, by_day)


def _day_checks(
    outcome: DayCounts, raw: int, policy: PipelinePolicy, blocked: bool
) -> list[dg.AssetCheckResult]:
    valid, quarantined = outcome.valid, outcome.quarantined
    return [
        dg.AssetCheckResult(
            check_name="reject_share_within_threshold",
            asset_key=VALIDATED,
            passed=not blocked,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "reject_share": outcome.reject_share,
                "max_reject_share": policy.max_reject_share,
                "rejects_by_rule": dg.MetadataValue.json(
                    dict(sorted(outcome.rejects_by_rule.items(), key=lambda kv: -kv[1]))
                ),
            },
            description=f"{quarantined} of {raw} rows quarantined ({outcome.reject_share:.2%}; "
            f"at most {policy.max_reject_share:.2%})",
        ),
        dg.AssetCheckResult(
            check_name="reconciles_with_raw",
            asset_key=VALIDATED,
            passed=valid + quarantined == raw,
            metadata={"raw_rows": raw, "validated_rows": valid, "quarantined_rows": quarantined},
        ),
    ]


def _summary(outcomes: dict[str, DayCounts], raw_rows: dict[str, int]) -> dict:
    rejects: dict[str, int] = {}
    for outcome in outcomes.values():
        for rule, count in outcome.rejects_by_rule.items():
            rejects[rule] = rejects.get(rule, 0) + count
    valid = sum(o.valid for o in outcomes.values())
    quarantined = sum(o.quarantined for o in outcomes.values())
    raw = sum(raw_rows.values())
    return {
        "valid": valid,
        "quarantined": quarantined,
        "raw": raw,
        "reject_share": quarantined / raw if raw else 0.0,
        "share_by_day": {day: o.reject_share for day, o in outcomes.items()},
        "rejects_by_rule": dict(sorted(rejects.items(), key=lambda kv: -kv[1])),
    }
