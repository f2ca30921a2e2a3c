"""Validation: the pandera data contract, the silver table and the quarantine."""
