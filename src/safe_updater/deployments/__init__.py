"""The standard deployments, used by ``safe-updater serve`` and by prefect.yaml."""
