"""Safe Auto-Updater: keeps Docker containers, Kubernetes workloads and Helm releases up to date
without breaking them."""

__version__ = "0.1.0"
