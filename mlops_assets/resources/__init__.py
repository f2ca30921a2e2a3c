"""Dagster resources: the Delta lake, the landing zone and MLflow tracking."""
