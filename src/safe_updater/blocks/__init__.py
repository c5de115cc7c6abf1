"""Prefect Blocks: stored connections and secrets, each a factory for its adapter."""
