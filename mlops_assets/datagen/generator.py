"""PaySim-style synthetic mobile-money transactions for the fraud-detection demo.

One call to :func:`generate_day` produces one UTC calendar day of transactions.
The output follows the PaySim schema (``PAYSIM_COLUMNS``) plus a ``timestamp``
column; ``step`` is PaySim's 1-based hour index counted from ``config.epoch``.

Design notes
------------
* Everything is vectorised with numpy; money is handled as integer cents and only
  converted to ``Float64`` at the end, so "emptying" rows satisfy
  ``amount == oldbalanceOrg`` exactly.
* Determinism: the customer/merchant pool depends on ``seed`` only, every day uses
  ``numpy.random.default_rng([seed, day.toordinal()])`` and the corruption step a
  third, independent stream. Identical inputs give identical frames, and the
  corrupted frame is the clean frame with a few cells altered.
* Fraud comes in *events*: a compromised victim account TRANSFERs (all or part of)
  its balance to a mule account, which CASH_OUTs it within minutes to two hours;
  some events split the money over several mules, some are a direct CASH_OUT.
  Mules are a small, stable subset of the customer pool, so per-account history
  and velocity features carry signal. No single rule separates fraud perfectly:
  some frauds are partial, some legit TRANSFER/CASH_OUT rows empty the account,
  and the PaySim "destination balances stay 0" quirk hits fraud and legit rows.
* The drift scenario (``day >= config.drift_start``) moves the amount
  distribution (log-mean +0.6, 25 % wider), the type mix (more TRANSFER/CASH_OUT,
  fewer PAYMENT) and fraud behaviour (more splitting, more partial frauds).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl

from mlops_assets.paysim import PAYSIM_COLUMNS, TRANSACTION_TYPES

OUTPUT_COLUMNS = (*PAYSIM_COLUMNS, "timestamp")
#: Kinds of contract-breaking rows injected when ``bad_row_share > 0``.
BAD_ROW_KINDS = (
    "negative_amount",
    "unknown_type",
    "null_required",
    "mistyped_numeric",
    "malformed_account",
)
#: Valid origin account ids (customers only).
CUSTOMER_ID_PATTERN = r"^C\d{9,10}$"
#: Valid destination account ids (customers or merchants).
ACCOUNT_ID_PATTERN = r"^[CM]\d{9,10}$"

_PAYMENT, _TRANSFER, _CASH_OUT, _DEBIT, _CASH_IN = range(len(TRANSACTION_TYPES))
_NEGATIVE, _UNKNOWN_TYPE, _NULL, _MISTYPED, _MALFORMED = range(len(BAD_ROW_KINDS))

_MS_PER_HOUR = 3_600_000
_MS_PER_DAY = 24 * _MS_PER_HOUR
_MAX_AMOUNT_CENTS = 10_000_000 * 100  # PaySim caps a single transaction at 10M
_MAX_WEALTH_CENTS = 50_000_000 * 100
_ID_LOW, _ID_HIGH = 10**8, 10**10  # 9-10 digit account numbers
_EPOCH_1970 = date(1970, 1, 1)

# Per-type log-normal amount parameters (log currency units), TRANSACTION_TYPES order.
_AMOUNT_MU = np.log(np.array([11_000.0, 450_000.0, 150_000.0, 4_000.0, 140_000.0]))
_AMOUNT_SIGMA = np.array([0.95, 1.0, 0.85, 0.8, 0.85])
# Relative activity per hour of day (UTC) for legit traffic; fraud is uniform.
_HOUR_WEIGHTS = np.array(
    [2, 1, 0.5, 0.5, 0.5, 1, 2, 4, 6, 8, 9, 10, 10, 10, 9, 9, 9, 9, 10, 9, 7, 5, 4, 3],
    dtype=np.float64,
)
_FLAG_THRESHOLD_CENTS = 200_000 * 100
_FLAG_PROBABILITY = 0.05
_UNKNOWN_TYPES = ("WIRE", "REFUND", "CRYPTO")

# Fraud event kinds.
_PAIR, _SPLIT, _DIRECT = 0, 1, 2


@dataclass(frozen=True)
class GeneratorConfig:
    """Parameters of the synthetic transaction stream.

    ``step`` 1 is ``epoch`` 00:00-00:59 UTC. From ``drift_start`` on (inclusive) the
    drift scenario is active. ``bad_row_share`` of the rows break the data contract
    (and the frame becomes all-Utf8). ``fraud_rate`` is the target share of fraud
    rows. ``n_customers`` defaults to ``max(rows_per_day // 4, 100)``.
    """

    rows_per_day: int = 20_000
    seed: int = 42
    epoch: date = date(2026, 1, 1)
    drift_start: date | None = None
    bad_row_share: float = 0.0
    fraud_rate: float = 0.006
    n_customers: int | None = None

    def __post_init__(self) -> None:
        """Validate the parameters early, with readable messages."""
        if self.rows_per_day < 0:
            raise ValueError(f"rows_per_day must be >= 0, got {self.rows_per_day}")
        if not 0.0 <= self.bad_row_share <= 1.0:
            raise ValueError(f"bad_row_share must be in [0, 1], got {self.bad_row_share}")
        if not 0.0 <= self.fraud_rate < 0.5:
            raise ValueError(f"fraud_rate must be in [0, 0.5), got {self.fraud_rate}")
        if self.n_customers is not None and self.n_customers < 10:
            raise ValueError(f"n_customers must be >= 10, got {self.n_customers}")

    @property
    def customer_pool_size(self) -> int:
        """Number of customers in the stable pool."""
        if self.n_customers is not None:
            return self.n_customers
        return max(self.rows_per_day // 4, 100)

    def is_drift(self, day: date) -> bool:
        """Whether the drift scenario is active on ``day``."""
        return self.drift_start is not None and day >= self.drift_start


@dataclass(frozen=True)
class _Scenario:
    """Distribution parameters of one scenario (clean or drifted)."""

    type_probs: tuple[float, float, float, float, float]
    amount_shift: float
    sigma_scale: float
    event_probs: tuple[float, float, float]  # pair, split, direct
    partial_prob: float  # fraud takes only part of the victim's balance
    mule_keeps_prob: float  # mule keeps a prior balance (its CASH_OUT does not empty it)
    fraud_dest_zero_prob: float  # PaySim quirk on fraud rows
    legit_dest_zero_prob: float  # PaySim quirk on legit customer-destination rows
    legit_empty_prob: float  # legit TRANSFER/CASH_OUT moving the whole balance
    zero_balance_prob: float  # legit origin starting from a 0 balance


_CLEAN = _Scenario(
    type_probs=(0.34, 0.08, 0.35, 0.01, 0.22),
    amount_shift=0.0,
    sigma_scale=1.0,
    event_probs=(0.65, 0.15, 0.20),
    partial_prob=0.12,
    mule_keeps_prob=0.15,
    fraud_dest_zero_prob=0.6,
    legit_dest_zero_prob=0.05,
    legit_empty_prob=0.01,
    zero_balance_prob=0.08,
)
_DRIFT = _Scenario(
    type_probs=(0.22, 0.16, 0.42, 0.01, 0.19),
    amount_shift=0.6,
    sigma_scale=1.25,
    event_probs=(0.40, 0.45, 0.15),
    partial_prob=0.35,
    mule_keeps_prob=0.3,
    fraud_dest_zero_prob=0.5,
    legit_dest_zero_prob=0.05,
    legit_empty_prob=0.015,
    zero_balance_prob=0.08,
)


@dataclass(frozen=True)
class _Pool:
    """Stable (seed-only) customers and merchants."""

    customer_ids: np.ndarray  # int64 account numbers
    wealth_cents: np.ndarray  # float64 typical balance per customer
    activity_cdf: np.ndarray  # cumulative activity weights, last element == 1
    mule_idx: np.ndarray  # indices into customer_ids
    merchant_ids: np.ndarray  # int64 account numbers


def _unique_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw ``n`` distinct random 9-10 digit account numbers."""
    ids = np.empty(0, dtype=np.int64)
    while ids.size < n:
        draw = rng.integers(_ID_LOW, _ID_HIGH, size=int(n * 1.05) + 16, dtype=np.int64)
        ids = np.unique(np.concatenate([ids, draw]))
    return rng.permutation(ids)[:n]


def _readonly(*arrays: np.ndarray) -> None:
    """Mark cached arrays read-only so callers cannot corrupt the cache."""
    for array in arrays:
        array.setflags(write=False)


@lru_cache(maxsize=8)
def _pool(seed: int, n_customers: int) -> _Pool:
    """Build the customer/merchant pool; depends on ``seed`` and size only."""
    rng = np.random.default_rng([seed, 0, 1])
    ids = _unique_ids(rng, n_customers + max(n_customers // 5, 20))
    customer_ids, merchant_ids = ids[:n_customers], ids[n_customers:]
    wealth = np.minimum(rng.lognormal(math.log(80_000 * 100), 1.2, n_customers), _MAX_WEALTH_CENTS)
    n_mules = max(n_customers // 200, 2)
    mule_idx = rng.choice(n_customers, size=n_mules, replace=False)
    activity = rng.gamma(2.0, 1.0, n_customers)
    activity[mule_idx] *= 0.2  # mules are quiet outside fraud
    activity_cdf = np.cumsum(activity)
    activity_cdf /= activity_cdf[-1]
    _readonly(customer_ids, wealth, activity_cdf, mule_idx, merchant_ids)
    return _Pool(customer_ids, wealth, activity_cdf, mule_idx, merchant_ids)


def _jitter(rng: np.random.Generator, base: np.ndarray, sigma: float = 0.35) -> np.ndarray:
    """Per-transaction balance around an account's typical balance, in whole cents."""
    return np.rint(base * rng.lognormal(0.0, sigma, base.size)).astype(np.int64)


def _other_customer(idx: np.ndarray, avoid: np.ndarray, n_customers: int) -> np.ndarray:
    """Replace ``idx`` by the next customer where it equals ``avoid``."""
    return np.where(idx == avoid, (idx + 1) % n_customers, idx)


def _legit_rows(
    rng: np.random.Generator, n: int, pool: _Pool, sc: _Scenario
) -> dict[str, np.ndarray]:
    """Legitimate transactions, as integer-coded numpy columns."""
    n_customers = pool.customer_ids.size
    type_code = np.searchsorted(np.cumsum(sc.type_probs), rng.random(n), side="right")
    type_code = np.minimum(type_code, len(TRANSACTION_TYPES) - 1)
    orig = np.minimum(
        np.searchsorted(pool.activity_cdf, rng.random(n), side="right"), n_customers - 1
    )

    log_amount = (_AMOUNT_MU[type_code] + sc.amount_shift) + (
        _AMOUNT_SIGMA[type_code] * sc.sigma_scale
    ) * rng.standard_normal(n)
    amount = np.clip(np.rint(np.exp(log_amount) * 100), 1, _MAX_AMOUNT_CENTS).astype(np.int64)

    old_org = _jitter(rng, pool.wealth_cents[orig])
    old_org[rng.random(n) < sc.zero_balance_prob] = 0
    cash_like = (type_code == _TRANSFER) | (type_code == _CASH_OUT)
    empties = (
        cash_like
        & (old_org > 0)
        & (old_org <= _MAX_AMOUNT_CENTS)
        & (rng.random(n) < sc.legit_empty_prob)
    )
    amount = np.where(empties, old_org, amount)
    incoming = type_code == _CASH_IN
    new_org = np.where(incoming, old_org + amount, np.maximum(old_org - amount, 0))

    to_merchant = type_code == _PAYMENT
    dest = np.where(
        to_merchant,
        rng.integers(0, pool.merchant_ids.size, n),
        _other_customer(rng.integers(0, n_customers, n), orig, n_customers),
    )
    old_dest = np.where(
        to_merchant, 0, _jitter(rng, pool.wealth_cents[np.where(to_merchant, 0, dest)])
    )
    new_dest = np.where(incoming, np.maximum(old_dest - amount, 0), old_dest + amount)
    zero_dest = to_merchant | (rng.random(n) < sc.legit_dest_zero_prob)
    old_dest = np.where(zero_dest, 0, old_dest)
    new_dest = np.where(zero_dest, 0, new_dest)

    hour = np.searchsorted(
        np.cumsum(_HOUR_WEIGHTS) / _HOUR_WEIGHTS.sum(), rng.random(n), side="right"
    )
    offset_ms = np.minimum(hour, 23) * _MS_PER_HOUR + rng.integers(0, _MS_PER_HOUR, n)
    zeros = np.zeros(n, dtype=np.int64)
    return {
        "type_code": type_code.astype(np.int64),
        "amount": amount,
        "orig": orig.astype(np.int64),
        "old_org": old_org,
        "new_org": new_org,
        "dest_is_merchant": to_merchant,
        "dest": dest.astype(np.int64),
        "old_dest": old_dest,
        "new_dest": new_dest,
        "is_fraud": zeros,
        "flagged": zeros.copy(),
        "offset_ms": offset_ms.astype(np.int64),
    }


def _per_event_positions(legs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Event index of every leg and the leg's position inside its event."""
    leg_event = np.repeat(np.arange(legs.size), legs)
    first_leg = np.cumsum(legs) - legs
    return leg_event, np.arange(leg_event.size) - first_leg[leg_event]


def _split_amounts(
    rng: np.random.Generator, total: np.ndarray, legs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Split each event's ``total`` cents over its legs; returns (part, before)."""
    leg_event, pos = _per_event_positions(legs)
    weights = rng.random(leg_event.size) + 0.5
    running = np.cumsum(weights)
    start = (running - weights)[pos == 0]
    cum_frac = (running - start[leg_event]) / np.bincount(leg_event, weights=weights)[leg_event]
    cum_frac[pos == legs[leg_event] - 1] = 1.0  # the last leg takes the exact remainder
    cum_amount = np.rint(total[leg_event] * cum_frac).astype(np.int64)
    before = np.where(pos == 0, 0, np.roll(cum_amount, 1))
    return cum_amount - before, before


def _fraud_rows(
    rng: np.random.Generator, n_target: int, pool: _Pool, sc: _Scenario
) -> dict[str, np.ndarray]:
    """Fraud events (victim TRANSFER -> mule CASH_OUT) reaching ``n_target`` rows."""
    n_customers = pool.customer_ids.size
    # Every event has >= 1 row, so n_target events always reach the target.
    kind = rng.choice(3, size=max(n_target, 1), p=sc.event_probs)
    legs = np.where(kind == _SPLIT, rng.integers(2, 4, kind.size), 1)
    rows_per_event = np.where(kind == _DIRECT, 1, 2 * legs)
    n_events = int(np.searchsorted(np.cumsum(rows_per_event), n_target)) + 1 if n_target > 0 else 0
    kind, legs = kind[:n_events], legs[:n_events]

    victim = rng.integers(0, n_customers, n_events)
    balance = np.clip(
        np.rint(
            rng.lognormal(
                math.log(250_000 * 100) + sc.amount_shift,
                1.1 * sc.sigma_scale,
                n_events,
            )
        ),
        100_000,
        _MAX_AMOUNT_CENTS,
    ).astype(np.int64)
    partial = rng.random(n_events) < sc.partial_prob
    total = np.where(
        partial,
        np.rint(balance * rng.uniform(0.3, 0.9, n_events)).astype(np.int64),
        balance,
    )
    part, before = _split_amounts(rng, total, legs)
    leg_event, pos = _per_event_positions(legs)
    n_legs = leg_event.size

    t0 = rng.integers(0, _MS_PER_DAY - 3 * _MS_PER_HOUR, n_events)
    gap = rng.integers(60_000, 15 * 60_000, n_events)
    t_first = t0[leg_event] + pos * gap[leg_event] + rng.integers(0, 60_000, n_legs)
    t_cash_out = t_first + rng.integers(2 * 60_000, 100 * 60_000, n_legs)

    direct = kind[leg_event] == _DIRECT
    victim_leg = victim[leg_event]
    victim_old = balance[leg_event] - before
    mule_pos = rng.integers(0, pool.mule_idx.size, n_legs)
    mule = pool.mule_idx[mule_pos]
    mule = np.where(mule == victim_leg, pool.mule_idx[(mule_pos + 1) % pool.mule_idx.size], mule)
    mule_prior = np.where(
        rng.random(n_legs) < sc.mule_keeps_prob,
        _jitter(rng, pool.wealth_cents[mule]),
        0,
    )
    agent = rng.integers(0, n_customers, n_legs)
    direct_dest = _other_customer(agent, victim_leg, n_customers)
    cash_out_dest = _other_customer(agent, mule, n_customers)

    # Leg rows: the victim's TRANSFER (or direct CASH_OUT) ...
    first = {
        "type_code": np.where(direct, _CASH_OUT, _TRANSFER),
        "amount": part,
        "orig": victim_leg,
        "old_org": victim_old,
        "new_org": victim_old - part,
        "dest": np.where(direct, direct_dest, mule),
        "old_dest": np.where(direct, _jitter(rng, pool.wealth_cents[direct_dest]), mule_prior),
        "offset_ms": t_first,
    }
    # ... and the mule's CASH_OUT of the received money (not for direct events).
    cash = ~direct
    second = {
        "type_code": np.full(int(cash.sum()), _CASH_OUT),
        "amount": part[cash],
        "orig": mule[cash],
        "old_org": mule_prior[cash] + part[cash],
        "new_org": mule_prior[cash],
        "dest": cash_out_dest[cash],
        "old_dest": _jitter(rng, pool.wealth_cents[cash_out_dest[cash]]),
        "offset_ms": t_cash_out[cash],
    }
    rows = {key: np.concatenate([first[key], second[key]]).astype(np.int64) for key in first}
    n_rows = rows["amount"].size
    zero_dest = rng.random(n_rows) < sc.fraud_dest_zero_prob
    rows["new_dest"] = np.where(zero_dest, 0, rows["old_dest"] + rows["amount"])
    rows["old_dest"] = np.where(zero_dest, 0, rows["old_dest"])
    rows["dest_is_merchant"] = np.zeros(n_rows, dtype=bool)
    rows["is_fraud"] = np.ones(n_rows, dtype=np.int64)
    rows["flagged"] = (
        (rows["type_code"] == _TRANSFER)
        & (rows["amount"] > _FLAG_THRESHOLD_CENTS)
        & (rng.random(n_rows) < _FLAG_PROBABILITY)
    ).astype(np.int64)
    return rows


def _to_frame(
    rows: dict[str, np.ndarray], day: date, config: GeneratorConfig, pool: _Pool
) -> pl.DataFrame:
    """Turn integer-coded columns into the typed PaySim frame, sorted by timestamp."""
    merchant_dest = rows["dest_is_merchant"]
    dest_id = np.where(
        merchant_dest,
        pool.merchant_ids[np.where(merchant_dest, rows["dest"], 0)],
        pool.customer_ids[np.where(merchant_dest, 0, rows["dest"])],
    )
    day_start_us = (day - _EPOCH_1970).days * _MS_PER_DAY * 1000
    first_step = (day - config.epoch).days * 24 + 1
    raw = pl.DataFrame(
        {
            "offset_ms": rows["offset_ms"],
            "type_code": rows["type_code"],
            "amount": rows["amount"],
            "orig_id": pool.customer_ids[rows["orig"]],
            "old_org": rows["old_org"],
            "new_org": rows["new_org"],
            "dest_is_merchant": merchant_dest,
            "dest_id": dest_id,
            "old_dest": rows["old_dest"],
            "new_dest": rows["new_dest"],
            "is_fraud": rows["is_fraud"],
            "flagged": rows["flagged"],
        }
    )
    cents = [
        ("amount", "amount"),
        ("old_org", "oldbalanceOrg"),
        ("new_org", "newbalanceOrig"),
        ("old_dest", "oldbalanceDest"),
        ("new_dest", "newbalanceDest"),
    ]
    money = {name: pl.col(src).cast(pl.Float64) / 100.0 for src, name in cents}
    return raw.sort("offset_ms", maintain_order=True).select(
        step=(pl.col("offset_ms") // _MS_PER_HOUR + first_step).cast(pl.Int64),
        type=pl.col("type_code").replace_strict(
            list(range(len(TRANSACTION_TYPES))),
            list(TRANSACTION_TYPES),
            return_dtype=pl.Utf8,
        ),
        amount=money["amount"],
        nameOrig=pl.concat_str(pl.lit("C"), pl.col("orig_id").cast(pl.Utf8)),
        oldbalanceOrg=money["oldbalanceOrg"],
        newbalanceOrig=money["newbalanceOrig"],
        nameDest=pl.concat_str(
            pl.when(pl.col("dest_is_merchant")).then(pl.lit("M")).otherwise(pl.lit("C")),
            pl.col("dest_id").cast(pl.Utf8),
        ),
        oldbalanceDest=money["oldbalanceDest"],
        newbalanceDest=money["newbalanceDest"],
        isFraud=pl.col("is_fraud").cast(pl.Int64),
        isFlaggedFraud=pl.col("flagged").cast(pl.Int64),
        timestamp=(pl.col("offset_ms") * 1000 + day_start_us).cast(pl.Datetime("us", "UTC")),
    )


def _corrupt(frame: pl.DataFrame, rng: np.random.Generator, share: float) -> pl.DataFrame:
    """Cast every column to Utf8 and break the contract on ``share`` of the rows.

    Bad rows are spread evenly over ``BAD_ROW_KINDS`` (one defect per row); ``isFraud``
    is never touched so it stays "0" or "1".
    """
    n = frame.height
    n_bad = min(round(n * share), n)
    kind = np.full(n, -1, dtype=np.int64)
    kind[rng.choice(n, size=n_bad, replace=False)] = rng.permutation(
        np.arange(n_bad) % len(BAD_ROW_KINDS)
    )
    variant = rng.integers(0, 3, n)
    noise = rng.integers(0, 1000, n)

    k, v = pl.col("_kind"), pl.col("_variant")
    noise_str = pl.col("_noise").cast(pl.Utf8)
    unknown_type = (
        pl.when(v == 0).then(pl.lit(_UNKNOWN_TYPES[0])).when(v == 1).then(pl.lit(_UNKNOWN_TYPES[1]))
    )
    unknown_type = unknown_type.otherwise(pl.lit(_UNKNOWN_TYPES[2]))
    as_text = frame.with_columns(
        pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"),
        pl.all().exclude("timestamp").cast(pl.Utf8),
        _kind=pl.Series(kind),
        _variant=pl.Series(variant),
        _noise=pl.Series(noise),
    )
    return as_text.with_columns(
        amount=pl.when(k == _NEGATIVE)
        .then(pl.concat_str(pl.lit("-"), pl.col("amount")))
        .when((k == _NULL) & (v != 1))
        .then(pl.lit(None, dtype=pl.Utf8))
        .when((k == _MISTYPED) & (v == 0))
        .then(pl.col("amount").str.replace(".", ",", literal=True) + "O")
        .otherwise(pl.col("amount")),
        type=pl.when(k == _UNKNOWN_TYPE).then(unknown_type).otherwise(pl.col("type")),
        nameOrig=pl.when((k == _NULL) & (v == 1))
        .then(pl.lit(None, dtype=pl.Utf8))
        .when((k == _MALFORMED) & (v == 0))
        .then(pl.concat_str(pl.lit("X"), noise_str, pl.lit("ab")))
        .when((k == _MALFORMED) & (v == 2))
        .then(pl.col("nameOrig").str.head(-2) + "zz")
        .otherwise(pl.col("nameOrig")),
        nameDest=pl.when((k == _MALFORMED) & (v == 1))
        .then(pl.concat_str(pl.lit("C"), noise_str))
        .otherwise(pl.col("nameDest")),
        oldbalanceOrg=pl.when((k == _MISTYPED) & (v == 1))
        .then(pl.lit("n/a"))
        .otherwise(pl.col("oldbalanceOrg")),
        newbalanceDest=pl.when((k == _MISTYPED) & (v == 2))
        .then(pl.lit("unknown"))
        .otherwise(pl.col("newbalanceDest")),
    ).select(OUTPUT_COLUMNS)


def generate_day(day: date, config: GeneratorConfig) -> pl.DataFrame:
    """Generate ``config.rows_per_day`` transactions for the UTC calendar day ``day``.

    Returns the 11 ``PAYSIM_COLUMNS`` plus ``timestamp``, sorted by timestamp. With
    ``bad_row_share == 0`` the frame is typed (Int64 / Utf8 / Float64 in cents /
    Datetime("us", "UTC")); otherwise every column is Utf8 and about
    ``bad_row_share`` of the rows break the data contract.
    """
    if day < config.epoch:
        raise ValueError(f"day {day} is before the epoch {config.epoch}; PaySim steps start at 1")
    scenario = _DRIFT if config.is_drift(day) else _CLEAN
    pool = _pool(config.seed, config.customer_pool_size)
    rng = np.random.default_rng([config.seed, day.toordinal()])
    n = config.rows_per_day
    fraud = _fraud_rows(rng, int(rng.binomial(n, config.fraud_rate)), pool, scenario)
    n_fraud = min(fraud["amount"].size, n)
    legit = _legit_rows(rng, n - n_fraud, pool, scenario)
    rows = {key: np.concatenate([legit[key], fraud[key][:n_fraud]]) for key in legit}
    frame = _to_frame(rows, day, config, pool)
    if config.bad_row_share > 0:
        frame = _corrupt(
            frame,
            np.random.default_rng([config.seed, day.toordinal(), 2]),
            config.bad_row_share,
        )
    return frame


_EXTENSIONS = {"csv": "csv", "parquet": "parquet"}


def day_file_name(day: date, fmt: str = "csv") -> str:
    """File name of one landed day, e.g. ``transactions_2026-01-01.csv``."""
    if fmt not in _EXTENSIONS:
        raise ValueError(f"fmt must be one of {sorted(_EXTENSIONS)}, got {fmt!r}")
    return f"transactions_{day.isoformat()}.{_EXTENSIONS[fmt]}"


def _write_atomic(frame: pl.DataFrame, target: Path, fmt: str) -> None:
    """Write to a hidden temp file next to ``target``, fsync, then ``os.replace`` it."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if fmt == "csv":
                frame.write_csv(handle, datetime_format="%Y-%m-%dT%H:%M:%S%.3fZ")
            else:
                frame.write_parquet(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_day(
    day: date, config: GeneratorConfig, landing_dir: str | Path, fmt: str = "csv"
) -> Path:
    """Generate ``day`` and land it atomically as ``transactions_<day>.<ext>``."""
    target = Path(landing_dir) / day_file_name(day, fmt)
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(generate_day(day, config), target, fmt)
    return target


def write_days(
    start: date,
    days: int,
    config: GeneratorConfig,
    landing_dir: str | Path,
    fmt: str = "csv",
) -> list[Path]:
    """Land ``days`` consecutive days from ``start``; returns the written paths."""
    if days < 0:
        raise ValueError(f"days must be >= 0, got {days}")
    return [write_day(start + timedelta(days=i), config, landing_dir, fmt) for i in range(days)]
