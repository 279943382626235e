"""Local clusters are created one at a time on a machine: kwokctl picks free ports, two at once can pick the same."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from vllm_gate.base.errors import ClusterError
from vllm_gate.cluster import creation_lock
from vllm_gate.cluster.creation_lock import one_creation_at_a_time


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(creation_lock, "CREATE_LOCK", tmp_path / "kwokctl-create.lock")
    monkeypatch.setattr(creation_lock, "PROGRESS_EVERY_S", 0.3)


def _hold(entered: threading.Event, release: threading.Event) -> None:
    with one_creation_at_a_time("first", lambda _m: None):
        entered.set()
        release.wait(10)


def test_a_second_creation_waits_for_the_first_and_says_so():
    entered, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold, args=(entered, release))
    holder.start()
    assert entered.wait(10)
    threading.Timer(1.5, release.set).start()
    said: list[str] = []
    with one_creation_at_a_time("second", said.append):
        after_the_first = release.is_set()
    holder.join(10)
    assert after_the_first, "the second creation did not wait for the first"
    assert said
    assert said[0].startswith("local cluster second: waiting for another cluster's creation to finish")


def test_a_creation_held_too_long_fails_naming_the_lock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(creation_lock, "LOCK_TIMEOUT_S", 0.5)
    entered, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold, args=(entered, release))
    holder.start()
    try:
        assert entered.wait(10)
        with pytest.raises(ClusterError, match=r"local cluster second: another cluster's creation held .*"
                                               r"kwokctl-create\.lock for over 0\.5 s"), \
                one_creation_at_a_time("second", lambda _m: None):
            pass
    finally:
        release.set()
        holder.join(10)


def test_the_lock_is_the_machines_whatever_state_directory_a_run_has():
    # A `vllm-gate cluster up` with VLLM_GATE_STATE of its own beside a test run: kwokctl's ports are the machine's.
    fresh = subprocess.run([sys.executable, "-c", "from vllm_gate.cluster.creation_lock import CREATE_LOCK; "
                            "print(CREATE_LOCK)"], capture_output=True, text=True, timeout=60, check=True,
                           env={**os.environ, "VLLM_GATE_STATE": "/nonexistent/state"}).stdout.strip()
    assert fresh == str(Path(tempfile.gettempdir()) / "vllm-gate-kwokctl-create.lock")
