"""Facts of the PaySim format shared by the generator, the delivery rules and the contract."""

from __future__ import annotations

#: The five PaySim transaction types.
TRANSACTION_TYPES = ("PAYMENT", "TRANSFER", "CASH_OUT", "DEBIT", "CASH_IN")

#: The columns of a PaySim log, in PaySim's order.
PAYSIM_COLUMNS = (
    "step",
    "type",
    "amount",
    "nameOrig",
    "oldbalanceOrg",
    "newbalanceOrig",
    "nameDest",
    "oldbalanceDest",
    "newbalanceDest",
    "isFraud",
    "isFlaggedFraud",
)
