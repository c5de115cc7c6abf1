"""Adapter-specific errors, all inside the tree of :mod:`safe_updater.domain.errors`.

TransientError
  - RegistryUnavailableError   registry 5xx, timeout, 429 (retry_after set)
  - EngineUnavailableError     Docker daemon or kube-apiserver unreachable
  - OperationInProgressError   helm: another operation is in progress
PermanentError
  - RegistryAuthError (AuthError)
  - ImageNotFoundError (NotFoundError)
  - RegistryResponseError (InvalidInputError)  a malformed registry answer
  - ContainerError             the engine refused an operation
  - HelmError                  helm failed for a reason retrying will not fix
"""

from __future__ import annotations

from safe_updater.domain.errors import (
    AuthError,
    InvalidInputError,
    NotFoundError,
    PermanentError,
    TransientError,
)


class RegistryUnavailableError(TransientError):
    """The registry did not answer usefully this time."""


class EngineUnavailableError(TransientError):
    """The Docker daemon or the Kubernetes API could not be reached."""


class OperationInProgressError(TransientError):
    """Another operation on the same release is in progress."""


class RegistryAuthError(AuthError):
    """The registry refused the credentials, or needs some."""


class ImageNotFoundError(NotFoundError):
    """The repository, tag or manifest does not exist."""


class RegistryResponseError(InvalidInputError):
    """The registry answered with something that is not valid for the API."""


class ContainerError(PermanentError):
    """The container engine refused an operation."""


class HelmError(PermanentError):
    """helm failed for a reason that retrying will not fix."""
