"""The data contract's one-row rules, applied to one transaction at a time (the model service's
requests, the streamed messages) instead of a day's table.

Read from the pandera contract itself (``contract.py``), so a rule changed there changes here:
each column check of ``TransactionContract`` becomes a test of one value. What needs several
rows (duplicates, the day's reject share) stays with the table validation (``rules.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from mlops_assets.paysim import PAYSIM_COLUMNS
from mlops_assets.validate.contract import TransactionContract

MAX_TRANSACTION_ID_LENGTH = 256


class ContractViolation(ValueError):
    """A value that the data contract would reject: which field and which rule."""

    def __init__(self, field: str, rule: str, value: Any = None) -> None:
        self.field = field
        self.rule = rule
        self.value = value
        super().__init__(f"{field}: {rule}")

    def detail(self) -> dict[str, Any]:
        return {"field": self.field, "rule": self.rule, "message": str(self)}


@dataclass(frozen=True)
class ValueRule:
    """One column check of the contract as a test of one value."""

    name: str  # the contract's check text, e.g. "greater_than(0)"
    test: Callable[[Any], bool]


def _rule_from_check(check: Any) -> ValueRule:
    stats = check.statistics
    if check.name == "greater_than":
        return ValueRule(check.error, lambda v, m=stats["min_value"]: v > m)
    if check.name == "greater_than_or_equal_to":
        return ValueRule(check.error, lambda v, m=stats["min_value"]: v >= m)
    if check.name == "isin":
        allowed = frozenset(stats["allowed_values"])
        return ValueRule(check.error, lambda v, a=allowed: v in a)
    if check.name == "str_matches":
        pattern = re.compile(stats["pattern"])
        return ValueRule(check.error, lambda v, p=pattern: p.match(v) is not None)
    raise NotImplementedError(f"contract check {check.name} has no one-row form")


def _contract_rules() -> dict[str, list[ValueRule]]:
    """The contract's column checks of every PaySim field, read from the contract itself."""
    columns = TransactionContract.to_schema().columns
    return {f: [_rule_from_check(c) for c in columns[f].checks] for f in PAYSIM_COLUMNS}


#: field -> its value rules
RULES = _contract_rules()


def check_value(name: str, value: Any) -> None:
    """``ContractViolation`` naming the first rule of field ``name`` that ``value`` breaks."""
    for rule in RULES.get(name, ()):
        if not rule.test(value):
            raise ContractViolation(name, rule.name, value)


def check_transaction_id(transaction_id: Any) -> None:
    """A delivered transaction id is a non-empty string of at most 256 characters (or None)."""
    if transaction_id is None:
        return
    if not isinstance(transaction_id, str) or not transaction_id:
        raise ContractViolation("transaction_id", "a non-empty string")
    if len(transaction_id) > MAX_TRANSACTION_ID_LENGTH:
        raise ContractViolation("transaction_id", f"at most {MAX_TRANSACTION_ID_LENGTH} characters")


def first_violation(record: Mapping[str, Any]) -> ContractViolation | None:
    """The first contract rule a typed record (every PaySim field of the right type) breaks,
    or None when it keeps every one-row rule."""
    try:
        check_transaction_id(record.get("transaction_id"))
        for name in PAYSIM_COLUMNS:
            value = record.get(name)
            if value is None:
                raise ContractViolation(name, "required, not null")
            check_value(name, value)
    except ContractViolation as violation:
        return violation
    return None


def _failing(check: Any, column: pl.Expr) -> pl.Expr:
    """Where a value breaks one column check of the contract (polars, a whole column)."""
    stats = check.statistics
    if check.name == "greater_than":
        return ~(column > stats["min_value"])
    if check.name == "greater_than_or_equal_to":
        return ~(column >= stats["min_value"])
    if check.name == "isin":
        return ~column.is_in(list(stats["allowed_values"]))
    if check.name == "str_matches":  # re.match: anchored at the start
        return ~column.str.contains(f"^(?:{stats['pattern']})")
    raise NotImplementedError(f"contract check {check.name} has no column form")


def first_violations(frame: pl.DataFrame) -> pl.Series:
    """For each typed record of ``frame`` (the PaySim fields, ``transaction_id``), the first
    one-row rule it breaks, as ``first_violation`` words it; null where it keeps them all.
    The same rules in the same order, over whole columns."""
    columns = TransactionContract.to_schema().columns
    reasons: list[pl.Expr] = []
    if "transaction_id" in frame.columns:
        length = pl.col("transaction_id").str.len_chars()
        reasons += [
            pl.when(pl.col("transaction_id").is_not_null() & (length == 0)).then(
                pl.lit("transaction_id: a non-empty string")
            ),
            pl.when(length > MAX_TRANSACTION_ID_LENGTH).then(
                pl.lit(f"transaction_id: at most {MAX_TRANSACTION_ID_LENGTH} characters")
            ),
        ]
    for name in PAYSIM_COLUMNS:
        if name not in frame.columns:
            reasons.append(pl.lit(f"{name}: required, not null"))
            continue
        column = pl.col(name)
        reasons.append(pl.when(column.is_null()).then(pl.lit(f"{name}: required, not null")))
        for check in columns[name].checks:
            reasons.append(pl.when(_failing(check, column)).then(pl.lit(f"{name}: {check.error}")))
    return frame.select(pl.coalesce(reasons).alias("violation")).to_series()
