"""Who acts: an identity some authority vouched for, and a display name that is only shown.

In team mode the authority is the MLflow tracking server (basic-auth): the account is the MLflow user whose
credentials made the request, and only the server builds the Actor. In local mode the authority is the
operating system: the account is the login of the process's real user id (not $USER, not $HUMANE_USER, not a
typed `--by`), so one account cannot approve what it registered under four eyes. A display name (`--by`, the
form's approver field, $HUMANE_USER) is printed beside the account and never compared.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

OS, MLFLOW_SERVER = "os", "mlflow-server"
DISPLAY_ENV = "HUMANE_USER"


@dataclass(frozen=True)
class Actor:
    """An authenticated account, the authority that vouched for it, and a display name."""

    account: str
    authority: str
    display: str

    def shown(self) -> str:
        """`display (account)`, or the account alone when they are the same."""
        return self.account if self.display in ("", self.account) else f"{self.display} ({self.account})"


def os_account() -> str:
    """The login name of this process's real user id (the environment cannot change it)."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def local_actor(display: str | None = None) -> Actor:
    """The operating-system account of this process, shown as `display` (else $HUMANE_USER, else the account)."""
    account = os_account()
    shown = (display or os.environ.get(DISPLAY_ENV) or account).strip() or account
    return Actor(account, OS, shown)
