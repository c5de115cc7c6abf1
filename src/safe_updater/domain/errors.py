"""The error tree every layer raises from.

Our exception hierarchy::

    SafeUpdaterError
      + TransientError          retrying may help: timeouts, 5xx, 429, connection resets
      + PermanentError          retrying is useless
        - InvalidInputError     bad config, tag, label, CLI argument; names where and how to fix
          . ConfigError         the config file; carries file, line and field
        - PolicyViolationError  the policy forbids the requested change
        - NotFoundError         the asset, release, image or tag does not exist
        - AuthError             credentials missing or refused
        - ConflictError         another operation holds the asset

Adapters translate library errors into this tree once, at the boundary, chained with ``from``.
Tasks retry only ``TransientError``.
"""

from __future__ import annotations


class SafeUpdaterError(Exception):
    """Base of every error the tool raises on purpose.

    ``hint`` tells the user how to fix it; the CLI prints ``message`` and ``hint`` on one line.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (fix: {self.hint})"
        return self.message


class TransientError(SafeUpdaterError):
    """A failure that may pass: retry with back-off."""

    def __init__(
        self, message: str, *, hint: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class PermanentError(SafeUpdaterError):
    """A failure that retrying will not fix."""


class InvalidInputError(PermanentError):
    """Bad input from a user or a remote system. Nothing was changed."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.source = source
        self.line = line
        self.field = field

    def location(self) -> str:
        """``file:line: field`` as far as it is known."""
        parts: list[str] = []
        if self.source:
            parts.append(self.source if self.line is None else f"{self.source}:{self.line}")
        if self.field:
            parts.append(self.field)
        return ": ".join(parts)

    def __str__(self) -> str:
        loc = self.location()
        text = f"{loc}: {self.message}" if loc else self.message
        return f"{text} (fix: {self.hint})" if self.hint else text


class ConfigError(InvalidInputError):
    """The configuration file is invalid."""


class PolicyViolationError(PermanentError):
    """The policy forbids the requested change."""


class NotFoundError(PermanentError):
    """The thing asked for does not exist."""


class AuthError(PermanentError):
    """Credentials are missing or were refused."""


class ConflictError(PermanentError):
    """Another operation holds the asset or release."""
