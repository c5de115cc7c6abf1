"""Side effects: one module per external system, each with a Protocol beside its real class.

Adapters never import prefect; they log through ``logging.getLogger(__name__)``.
"""
