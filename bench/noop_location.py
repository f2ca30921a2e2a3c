"""A code location of the data assets' shape doing no work: ``bench/backfill_year.py``'s floor
for what Dagster itself records per partition.

The same keys, daily partitions (``MLOPS_PARTITIONS_START``), single-run backfill policies,
dependencies and checks (two blocking checks on the validated asset, each day's result recorded
against its day with the platform's own ``checks_by_day``) as the real assets, and no data: a
range run through the CLI then costs what Dagster's run, step processes and event log cost for
those partitions (the planned and recorded materializations, the check evaluations), which no
change to the platform's own work can remove.
"""

from collections.abc import Iterator

import dagster as dg

from mlops_assets.partitions import checks_by_day, daily_partitions

VALIDATED = dg.AssetKey("validated_transactions")
CHECKS = ("reject_share_within_threshold", "reconciles_with_raw")


@dg.asset(partitions_def=daily_partitions, backfill_policy=dg.BackfillPolicy.single_run())
def raw_transactions(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"days": len(context.partition_keys)})


@dg.multi_asset(
    specs=[
        dg.AssetSpec(VALIDATED, deps=["raw_transactions"]),
        dg.AssetSpec("quarantined_transactions", deps=["raw_transactions"]),
    ],
    check_specs=[
        dg.AssetCheckSpec(name, asset=VALIDATED, partitions_def=daily_partitions, blocking=True)
        for name in CHECKS
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=False,
)
def validated_transactions(context: dg.AssetExecutionContext) -> Iterator:
    yield dg.MaterializeResult(asset_key="quarantined_transactions")
    yield dg.MaterializeResult(asset_key=VALIDATED)
    by_day = {
        day: [
            dg.AssetCheckResult(check_name=name, asset_key=VALIDATED, passed=True)
            for name in CHECKS
        ]
        for day in context.partition_keys
    }
    yield from checks_by_day(context, VALIDATED, by_day)


@dg.asset(
    partitions_def=daily_partitions,
    deps=[VALIDATED],
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def transaction_features(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"days": len(context.partition_keys)})


defs = dg.Definitions(assets=[raw_transactions, validated_transactions, transaction_features])
