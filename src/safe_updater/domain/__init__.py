"""Pure core: versions, policy, assets, plans, health verdicts, windows, errors.

Nothing here performs I/O, reads the clock or the environment, or imports prefect. Callers pass
``now`` and every other fact in.
"""
