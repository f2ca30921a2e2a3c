"""Training: the XGBoost fraud model, its time-based split and its metrics."""
