"""One error type for everything the user can fix; the CLI prints it as one clean line."""

from __future__ import annotations

from pathlib import Path


class RepogenError(Exception):
    """A problem with the user's input or environment, reported without a traceback.

    ``exit_code`` follows the CLI's convention: 2 for bad input (config, arguments),
    1 for a failed operation (a build, a download, a publish).
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(RepogenError):
    """A bad command-line argument (a selector, a shard, a selector that matches nothing): exit 2."""

    exit_code = 2


class ConfigError(RepogenError):
    """Bad input in a config file, located as ``file:line: field: message``."""

    exit_code = 2

    def __init__(self, file: Path | str, line: int | None, field: str, message: str) -> None:
        self.file = str(file)
        self.line = line
        self.field = field
        self.detail = message
        where = f"{self.file}:{line}" if line else self.file
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


class ConfigErrors(RepogenError):
    """Several config errors at once, so a maintainer fixes a pull request in one round."""

    exit_code = 2

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(e.message for e in errors))


class FetchError(RepogenError):
    """A download or unpack that failed: the URL, and what went wrong."""

    def __init__(self, message: str, *, hint: str | None = None, url: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.url = url


class BuildError(RepogenError):
    """One build that failed; the orchestrator records it and carries on with the others."""


class PublishError(RepogenError):
    """Publishing could not complete; the live tree is left as it was."""
