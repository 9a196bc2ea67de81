"""Errors that carry a message for people.

Any error the CLI should turn into a one-line message and exit status 2 derives from
:class:`UserError`. Its message says what was wrong and what was expected.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user gave us (a file, a flag, a config): exit 2, no traceback."""


class InputFileError(UserError):
    """A file that is missing, malformed, truncated or not what it claims to be."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UnsafeArtifactError(UserError):
    """A model file the scanner did not pass as safe, so it was not loaded."""
