"""mlops_assets: the fraud model's whole life cycle as Dagster software-defined assets.

Dagster marks some of the features this code location relies on as beta or preview and warns at
every load of the definitions (each ``dagster dev``, step process, sensor tick and CLI call):
the backfill policy of the partitioned assets and the partitioned asset checks. They are used on
purpose, on the pinned Dagster range, so those two warnings are not printed; any other warning
still is.
"""

import warnings

warnings.filterwarnings(
    "ignore", message=r"Parameter `backfill_policy` of function `asset` is currently in beta"
)
warnings.filterwarnings(
    "ignore", message=r"Specifying a partitions_def on an AssetCheckSpec is currently in preview"
)
