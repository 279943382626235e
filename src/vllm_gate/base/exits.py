"""Say how a child process ended, for reports."""

from __future__ import annotations

import contextlib
import signal


def exit_text(returncode: int) -> str:
    """``status 2``, or ``killed by SIGKILL`` for a process a signal ended."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"status {returncode}"
