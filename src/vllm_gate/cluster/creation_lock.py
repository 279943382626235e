"""One local cluster created at a time on this machine (kwokctl picks its ports as free ones)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from vllm_gate.base.errors import ClusterError

# Machine-wide, not under VLLM_GATE_STATE: ports are the machine's, and runs with state directories of their own
# (parallel rehearsals, `vllm-gate cluster up` beside a test run) must still take turns.
CREATE_LOCK = Path(tempfile.gettempdir()) / "vllm-gate-kwokctl-create.lock"
LOCK_TIMEOUT_S = 180  # one creation takes seconds; a queue of them on a loaded machine, a few minutes
PROGRESS_EVERY_S = 5


@contextlib.contextmanager
def one_creation_at_a_time(name: str, progress: Callable[[str], None]) -> Iterator[None]:
    """Hold the machine's cluster-creation lock (``CREATE_LOCK``) while kwokctl creates ``name``.

    kwokctl picks its components' ports as ports free a moment before; two creations at once (parallel test
    workers, two gate runs) can pick the same one, and one cluster's kubeconfig then reaches the other's API
    server. Once a creation returns its ports are bound, so the next one sees them taken.
    """
    # Read-only is enough for flock, so a lock file another user made serves everyone.
    with os.fdopen(os.open(CREATE_LOCK, os.O_RDONLY | os.O_CREAT, 0o644)) as lock:
        started = said = time.monotonic()
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited > LOCK_TIMEOUT_S:
                    raise ClusterError(f"local cluster {name}: another cluster's creation held "
                                       f"{CREATE_LOCK} for over {LOCK_TIMEOUT_S} s") from None
                if time.monotonic() - said >= PROGRESS_EVERY_S:
                    said = time.monotonic()
                    progress(f"local cluster {name}: waiting for another cluster's creation to finish "
                             f"(one at a time: kwokctl picks free ports), {waited:.0f} s")
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
