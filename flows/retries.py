"""When Prefect retries a task: only on an unexpected error, never on a HumaneError.

Bad input stays bad, and a server that did not answer was already retried within HUMANE_SERVER_RETRY_S by the
code that called it (humane.governance.store.server_calls); retrying it here would multiply that bound.
"""

from __future__ import annotations

from typing import Any

from prefect.states import State

from humane.core.errors import HumaneError


def retry_unexpected(task: Any, task_run: Any, state: State) -> bool:
    """Prefect's `retry_condition_fn`: retry an unexpected error, never a HumaneError."""
    if not state.is_failed():
        return False
    try:
        state.result()
    except HumaneError:
        return False
    except Exception:
        return True
    return False


# A task that talks to a server: two retries of an unexpected error, never of a HumaneError.
SERVER_TASK: dict[str, Any] = {"retries": 2, "retry_delay_seconds": [2, 10], "retry_condition_fn": retry_unexpected}
