"""The single exception type the CLI turns into a one-line error and a non-zero exit."""

from __future__ import annotations


class DevServicesError(Exception):
    """Something the user must fix; the message says what is wrong and what to do."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.details = details
