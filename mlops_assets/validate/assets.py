"""The silver ``validated_transactions`` and ``quarantined_transactions`` assets, and checks."""

from collections.abc import Iterator

import dagster as dg
import polars as pl

from mlops_assets.partitions import daily_partitions, partition_day
from mlops_assets.resources.lake import DeltaLake
from mlops_assets.resources.policy import PipelinePolicy
from mlops_assets.tables import (
    QUARANTINED_TRANSACTIONS,
    RAW_TRANSACTIONS,
    VALIDATED_TRANSACTIONS,
)
from mlops_assets.validate.contract import CONTRACT_VERSION, contract_hash, describe_contract
from mlops_assets.validate.rules import apply_contract

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
        ),
        dg.AssetSpec(
            QUARANTINED,
            deps=["raw_transactions"],
            description="Rejected rows of the day, exactly as delivered, each with the list of "
            "contract rules it broke (`_rules`). Nothing delivered is dropped: raw = validated + "
            "quarantined, row for row.",
            kinds={"delta", "pandera"},
            group_name="validate",
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            "reject_share_within_threshold",
            asset=VALIDATED,
            description="Fails when the share of quarantined rows exceeds the policy's "
            "max_reject_share (MLOPS_MAX_REJECT_SHARE).",
        ),
        dg.AssetCheckSpec(
            "reconciles_with_raw",
            asset=VALIDATED,
            description="Validated + quarantined rows equal the raw rows of the day.",
        ),
    ],
    partitions_def=daily_partitions,
)
def validated_transactions(
    context: dg.AssetExecutionContext, lake: DeltaLake, policy: PipelinePolicy
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Apply the data contract to the day's raw rows; split them into validated and quarantined."""
    day = partition_day(context)
    raw = pl.from_arrow(lake.read(RAW_TRANSACTIONS, days=[day]))
    if raw.height == 0:
        raise dg.Failure(
            description=f"raw_transactions has no rows for {day}: materialize it first"
        )
    outcome = apply_contract(raw.drop("txn_date"), day, policy.epoch)
    valid_write = lake.overwrite_day(VALIDATED_TRANSACTIONS, outcome.valid.to_arrow(), day)
    quarantine_write = lake.overwrite_day(
        QUARANTINED_TRANSACTIONS, outcome.quarantined.to_arrow(), day
    )
    contract = {"contract_version": CONTRACT_VERSION, "contract_hash": contract_hash()}
    rejects = dict(sorted(outcome.rejects_by_rule.items(), key=lambda kv: -kv[1]))
    context.log.info(
        f"{day}: {outcome.valid.height} valid, {outcome.quarantined.height} quarantined "
        f"({outcome.reject_share:.2%})"
    )
    yield dg.MaterializeResult(
        asset_key=VALIDATED,
        metadata={
            **valid_write.metadata(outcome.valid.to_arrow().schema),
            **contract,
            "raw_rows": raw.height,
            "reject_share": outcome.reject_share,
            "contract_rules": dg.MetadataValue.json(describe_contract()),
        },
    )
    yield dg.MaterializeResult(
        asset_key=QUARANTINED,
        metadata={
            **quarantine_write.metadata(outcome.quarantined.to_arrow().schema),
            **contract,
            "rejects_by_rule": dg.MetadataValue.json(rejects),
            "reject_share": outcome.reject_share,
        },
    )
    yield dg.AssetCheckResult(
        check_name="reject_share_within_threshold",
        asset_key=VALIDATED,
        passed=outcome.reject_share <= policy.max_reject_share,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "reject_share": outcome.reject_share,
            "max_reject_share": policy.max_reject_share,
            "rejects_by_rule": dg.MetadataValue.json(rejects),
        },
        description=f"{outcome.quarantined.height} of {raw.height} rows quarantined",
    )
    yield dg.AssetCheckResult(
        check_name="reconciles_with_raw",
        asset_key=VALIDATED,
        passed=outcome.total_rows == raw.height,
        metadata={
            "raw_rows": raw.height,
            "validated_rows": outcome.valid.height,
            "quarantined_rows": outcome.quarantined.height,
        },
    )
