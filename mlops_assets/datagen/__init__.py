"""Synthetic PaySim-style transaction generator for the fraud-detection demo."""

from mlops_assets.datagen.generator import (
    ACCOUNT_ID_PATTERN,
    BAD_ROW_KINDS,
    CUSTOMER_ID_PATTERN,
    OUTPUT_COLUMNS,
    PAYSIM_COLUMNS,
    TRANSACTION_TYPES,
    GeneratorConfig,
    day_file_name,
    generate_day,
    write_day,
    write_days,
)

__all__ = [
    "ACCOUNT_ID_PATTERN",
    "BAD_ROW_KINDS",
    "CUSTOMER_ID_PATTERN",
    "OUTPUT_COLUMNS",
    "PAYSIM_COLUMNS",
    "TRANSACTION_TYPES",
    "GeneratorConfig",
    "day_file_name",
    "generate_day",
    "write_day",
    "write_days",
]
