"""The silver ``validated_transactions`` and ``quarantined_transactions`` assets, and checks."""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import dagster as dg

from mlops_assets.automation import DAILY_FRESHNESS, refresh_when_upstream_day_changes
from mlops_assets.partitions import daily_partitions, describe_days, partition_days
from mlops_assets.resources.lake import DeltaLake, PartitionWrite
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.tables import (
    QUARANTINED_TRANSACTIONS,
    RAW_TRANSACTIONS,
    VALIDATED_TRANSACTIONS,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from mlops_assets.validate.rules import ContractOutcome

VALIDATED = dg.AssetKey("validated_transactions")
QUARANTINED = dg.AssetKey("quarantined_transactions")


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
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Apply the data contract to the day's raw rows; split them into validated and quarantined."""
    # pandera and polars load with the step, not with the code location
    import polars as pl

    from mlops_assets.validate.contract import CONTRACT_VERSION, contract_hash, describe_contract
    from mlops_assets.validate.rules import apply_contract

    zero_copy = pl.CompatLevel.newest()  # polars' string layout, to the Delta writer uncopied
    days = partition_days(context)
    outcomes: dict[str, ContractOutcome] = {}
    raw_rows: dict[str, int] = {}
    valid_write: PartitionWrite | None = None
    quarantine_write: PartitionWrite | None = None
    blocked: list = []
    schemas: dict[str, pa.Schema] = {}
    for day in days:
        raw = lake.read_frame(RAW_TRANSACTIONS, days=[day])
        if raw.height == 0:
            raise dg.Failure(
                description=f"raw_transactions has no rows for {day}: materialize it first"
            )
        outcome = apply_contract(raw.drop("txn_date"), day, policy.epoch)
        quarantined_table = outcome.quarantined.to_arrow(compat_level=zero_copy)
        schemas["quarantined"] = quarantined_table.schema
        if outcome.reject_share > policy.max_reject_share:
            # blocked: the rejects are in quarantine, the day's silver rows are held back
            blocked.append(day)
            quarantine_write = lake.overwrite_day(QUARANTINED_TRANSACTIONS, quarantined_table, day)
        else:
            valid_table = outcome.valid.to_arrow(compat_level=zero_copy)
            schemas["valid"] = valid_table.schema
            # the two tables are written side by side (delta-rs releases the GIL)
            with ThreadPoolExecutor(max_workers=2) as pool:
                pending = pool.submit(
                    lake.overwrite_day, QUARANTINED_TRANSACTIONS, quarantined_table, day
                )
                valid_write = lake.overwrite_day(VALIDATED_TRANSACTIONS, valid_table, day)
                quarantine_write = pending.result()
        outcomes[day.isoformat()] = outcome
        raw_rows[day.isoformat()] = raw.height
        context.log.info(
            f"{day}: {outcome.valid.height} valid, {outcome.quarantined.height} quarantined "
            f"({outcome.reject_share:.2%})"
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
        yield from _checks(summary, policy, blocked)
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
    yield from _checks(summary, policy, blocked)


def _checks(summary: dict, policy: PipelinePolicy, blocked: list) -> Iterator[dg.AssetCheckResult]:
    worst_day, worst_share = max(summary["share_by_day"].items(), key=lambda kv: kv[1])
    yield dg.AssetCheckResult(
        check_name="reject_share_within_threshold",
        asset_key=VALIDATED,
        passed=not blocked,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "reject_share": summary["reject_share"],
            "worst_day": worst_day,
            "worst_day_reject_share": worst_share,
            "max_reject_share": policy.max_reject_share,
            "blocked_days": dg.MetadataValue.json([d.isoformat() for d in blocked]),
            "rejects_by_rule": dg.MetadataValue.json(summary["rejects_by_rule"]),
        },
        description=f"{summary['quarantined']} of {summary['raw']} rows quarantined; "
        f"worst day {worst_day} at {worst_share:.2%}",
    )
    yield dg.AssetCheckResult(
        check_name="reconciles_with_raw",
        asset_key=VALIDATED,
        passed=summary["valid"] + summary["quarantined"] == summary["raw"],
        metadata={
            "raw_rows": summary["raw"],
            "validated_rows": summary["valid"],
            "quarantined_rows": summary["quarantined"],
        },
    )


def _summary(outcomes: "dict[str, ContractOutcome]", raw_rows: dict[str, int]) -> dict:
    rejects: dict[str, int] = {}
    for outcome in outcomes.values():
        for rule, count in outcome.rejects_by_rule.items():
            rejects[rule] = rejects.get(rule, 0) + count
    valid = sum(o.valid.height for o in outcomes.values())
    quarantined = sum(o.quarantined.height for o in outcomes.values())
    raw = sum(raw_rows.values())
    return {
        "valid": valid,
        "quarantined": quarantined,
        "raw": raw,
        "reject_share": quarantined / raw if raw else 0.0,
        "share_by_day": {day: o.reject_share for day, o in outcomes.items()},
        "rejects_by_rule": dict(sorted(rejects.items(), key=lambda kv: -kv[1])),
    }
