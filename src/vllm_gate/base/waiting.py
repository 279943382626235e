"""Polling with a deadline that says every few seconds what it still waits for."""

from __future__ import annotations

import time
from collections.abc import Callable

PROGRESS_EVERY_S = 10.0


def wait_until(state: Callable[[], str | None], timeout_s: float, say: Callable[[str, float], None], *,
               poll_s: float = 1.0, every_s: float = PROGRESS_EVERY_S) -> str | None:
    """Poll ``state`` (None: done; else what it still waits on; it raises where waiting is hopeless) until it is
    done or ``timeout_s`` passed, calling ``say(waiting_on, elapsed_s)`` every ``every_s``. None when done, else the
    last thing it waited on."""
    started = said = time.monotonic()
    while True:
        waiting = state()
        now = time.monotonic()
        if waiting is None or now - started >= timeout_s:
            return waiting
        if now - said >= every_s:
            said = now
            say(waiting, now - started)
        time.sleep(poll_s)
