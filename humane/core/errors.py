"""Errors a user can act on, and the one place that turns them into an exit code.

Each error class carries its exit code, so an entry point's exit code is read from the error's type, never from
its message text. The codes every entry point shares (docs/reference/exit-codes.md lists each entry point's own too):

    2   HumaneError: bad input or configuration; the message names the file, column or setting and the rule
    10  ServerUnavailable: a server (MLflow, Prefect, PostgreSQL) did not answer within the bounded retries
    11  AccessRefused: a server refused the credentials or the permission; the message names the user
    12  IntegrityFailed: a registered file, the audit trail or a recorded hash does not verify
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

INPUT_EXIT = 2
UNAVAILABLE_EXIT = 10
ACCESS_EXIT = 11
INTEGRITY_EXIT = 12


# The user:password@ part of a URL (a tracking URI, a Prefect API URL, a database address).
_USERINFO = re.compile(r"(?<=://)[^/\s@'\"]+@")


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it removed (`http://u:p@host` -> `http://host`)."""
    return _USERINFO.sub("", text)


class HumaneError(Exception):
    """An error caused by input or configuration; its message says what to fix (never a URL's credentials)."""

    exit_code = INPUT_EXIT

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(arg) if isinstance(arg, str) else arg for arg in args))


class ConfigError(HumaneError):
    """params.yaml (or an override) is malformed."""


class DataError(HumaneError):
    """A data source cannot be read or does not match its declared shape."""


class ValidationFailed(HumaneError):
    """Great Expectations validation of the input data failed."""


class ServerUnavailable(HumaneError):
    """A server did not answer within the bounded retries; the message names the server and the setting."""

    exit_code = UNAVAILABLE_EXIT


class AccessRefused(HumaneError):
    """A server refused the request's credentials or permission; the message names the user, never a secret."""

    exit_code = ACCESS_EXIT


class IntegrityFailed(HumaneError):
    """Something recorded does not verify (a registered file's hash, the audit trail's chain)."""

    exit_code = INTEGRITY_EXIT


def exit_code(err: BaseException) -> int:
    """The exit code of an error: its class's code for a HumaneError, 1 for anything unexpected."""
    return err.exit_code if isinstance(err, HumaneError) else 1


def cli(main: Callable[[], None]) -> None:
    """Run a stage entry point; user errors print one clear line and exit with their code, never a traceback."""
    try:
        main()
    except HumaneError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
