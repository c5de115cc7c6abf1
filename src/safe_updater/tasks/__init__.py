"""Thin Prefect tasks: retries, timeouts, run logger; one adapter or domain call each."""
