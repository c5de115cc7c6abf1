"""Shared test helpers. `support.testbed`: the test bed's env, registries, demo containers."""
