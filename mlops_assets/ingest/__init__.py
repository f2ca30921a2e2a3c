"""Ingestion: landing-zone files to the bronze ``raw_transactions`` Delta table."""
