"""Errors a user can act on, and the one place that turns them into an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable


class HumaneError(Exception):
    """An error caused by input or configuration; its message says what to fix."""


class ConfigError(HumaneError):
    """params.yaml (or an override) is malformed."""


class DataError(HumaneError):
    """A data source cannot be read or does not match its declared shape."""


class ValidationFailed(HumaneError):
    """Great Expectations validation of the input data failed."""


def cli(main: Callable[[], None]) -> None:
    """Run a stage entry point; user errors print one clear line and exit 2, never a bare traceback."""
    try:
        main()
    except HumaneError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
