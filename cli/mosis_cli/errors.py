"""Exit codes of `mosis` and the error every command raises to end with one.

The codes are part of the tool's interface (`mosis help exit-codes`): scripts
branch on them, so they never change meaning.
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    ERROR = 1  # unexpected: a bug, or an answer the tool does not understand
    USAGE = 2  # wrong arguments, missing file
    AUTH = 3  # not logged in, or the token was refused
    NOT_FOUND = 4  # no such app, version or package
    CONFLICT = 5  # version exists, code not increasing, wrong state, package id taken
    INVALID = 6  # the package failed validation (locally or on the server)
    NETWORK = 7  # the service or storage could not be reached
    SERVER = 8  # the service answered with an error of its own (5xx)
    INTEGRITY = 9  # a download does not match its sha256 or signature
    REFUSED = 10  # the service refused the request (other 4xx)
    TIMEOUT = 11  # validation did not finish within --timeout
    INTERRUPTED = 130  # Ctrl-C


class CliError(Exception):
    """A failure with its exit code, a stable code, a message and a hint."""

    def __init__(self, exit_code: Exit, message: str, *, code: str | None = None,
                 hint: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message
        self.code = code or exit_code.name.lower()
        self.hint = hint
        self.details = details or {}

    def to_dict(self) -> dict:
        body = {"code": self.code, "message": self.message, "exit_code": int(self.exit_code)}
        if self.hint:
            body["hint"] = self.hint
        if self.details:
            body["details"] = self.details
        return {"error": body}


def exit_for_status(status: int, code: str = "") -> Exit:
    """The exit code for an API error answer."""
    if status in (401, 403):
        return Exit.AUTH
    if status == 404:
        return Exit.NOT_FOUND
    if status == 413 or code == "size_mismatch":
        return Exit.INVALID  # the package itself is wrong
    if status == 409:
        return Exit.CONFLICT
    if status >= 500:
        return Exit.SERVER
    return Exit.REFUSED
