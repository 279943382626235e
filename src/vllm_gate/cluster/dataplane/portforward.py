"""Reach a Service from outside the cluster with ``kubectl port-forward``, restarted if it drops."""

from __future__ import annotations

import collections
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from vllm_gate.base.errors import ClusterError
from vllm_gate.base.exits import exit_text
from vllm_gate.base.lifecycle import Started
from vllm_gate.base.ports import free_port, port_open
from vllm_gate.base.tools import require_tool

START_TIMEOUT_S = 20
CHECK_S = 0.5
RETRY_MAX_S = 10.0  # a restart that keeps failing is tried after 0.5, 1, 2, ... s, at most this far apart
OUTPUT_LINES = 20
CHATTER = ("Forwarding from ", "Handling connection for ")


def _quiet(_message: str) -> None:
    """Progress callback that says nothing."""


class PortForward(Started):
    """``kubectl port-forward svc/NAME LOCAL:REMOTE`` on a fixed local port, kept alive by a monitor.

    Each restart is reported through ``progress``; so is the first failed restart of an outage, and
    how many tries it took once the forward is back. ``restarts`` counts restarts that worked,
    ``failed_restarts`` the tries that did not.
    """

    def __init__(self, namespace: str, target: str, remote_port: int, *, kubeconfig: Path | None,
                 context: str | None, progress: Callable[[str], None] = _quiet) -> None:
        self.namespace = namespace
        self.target = target  # "svc/name" or "pod/name"
        self.remote_port = remote_port
        self.local_port = free_port()
        self.restarts = 0
        self.failed_restarts = 0
        self._kubeconfig = kubeconfig
        self._context = context
        self._progress = progress
        self._proc: subprocess.Popen[str] | None = None
        # kubectl prints a line per connection: drained, or a full pipe would stall the forward.
        self._output: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES)
        self._drainer: threading.Thread | None = None
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._keep_alive, name="vllm-gate-port-forward", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    @property
    def pid(self) -> int | None:
        """The kubectl process forwarding now (None before start)."""
        return self._proc.pid if self._proc is not None else None

    def _command(self) -> list[str]:
        cmd = [str(require_tool("kubectl"))]
        if self._kubeconfig:
            cmd += ["--kubeconfig", str(self._kubeconfig)]
        if self._context:
            cmd += ["--context", self._context]
        return [*cmd, "-n", self.namespace, "port-forward", "--address", "127.0.0.1", self.target,
                f"{self.local_port}:{self.remote_port}"]

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        """Keep kubectl's last lines that say something went wrong (not its per-connection chatter)."""
        if proc.stdout is not None:
            for line in proc.stdout:
                if line.strip() and not line.startswith(CHATTER):
                    self._output.append(line.strip())

    def _last_output(self) -> str:
        """kubectl's last line, once the process has exited and its output is read to the end."""
        if self._drainer is not None:
            self._drainer.join(5)
        return self._output[-1] if self._output else ""

    def _spawn(self) -> None:
        self._output.clear()
        self._proc = subprocess.Popen(self._command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, text=True)
        self._drainer = threading.Thread(target=self._drain, args=(self._proc,), name="vllm-gate-pf-output",
                                         daemon=True)
        self._drainer.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._stop.is_set():  # stop() came while a restart was starting: leave no kubectl behind
                self._terminate()
                raise ClusterError(f"kubectl port-forward {self.target} -n {self.namespace}: stopped")
            if self._proc.poll() is not None:
                raise ClusterError(f"kubectl port-forward {self.target} -n {self.namespace} exited "
                                   f"({exit_text(self._proc.returncode)}): {self._last_output()}",
                                   "\n".join(self._output))
            if port_open(self.local_port):
                return
            time.sleep(0.1)
        self._terminate()
        raise ClusterError(f"kubectl port-forward {self.target} -n {self.namespace}: no local port "
                           f"{self.local_port} within {START_TIMEOUT_S} s")

    def _keep_alive(self) -> None:
        delay = CHECK_S
        failed_in_a_row = 0
        dropped = ""
        while not self._stop.wait(delay):
            if self._proc is None or self._proc.poll() is None:
                continue
            if failed_in_a_row == 0:
                last = self._last_output()
                dropped = f"port-forward {self.target} dropped ({exit_text(self._proc.returncode)})" + (
                    f": {last}" if last else "")
            try:
                self._spawn()
            except ClusterError as exc:
                self.failed_restarts += 1
                failed_in_a_row += 1
                delay = min(RETRY_MAX_S, CHECK_S * 2 ** failed_in_a_row)
                if failed_in_a_row == 1:  # later tries are counted, reported when it is back
                    self._progress(f"{dropped}; restart failed: {exc.summary}; retrying, backing off "
                                   f"to {RETRY_MAX_S:.0f} s")
                continue
            self.restarts += 1
            after = f" after {failed_in_a_row} failed tries" if failed_in_a_row else ""
            self._progress(f"{dropped}; restarted (#{self.restarts}){after}")
            failed_in_a_row, delay = 0, CHECK_S

    def _terminate(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)

    def start(self) -> PortForward:
        self._spawn()
        self._monitor.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._monitor.is_alive():
            self._monitor.join(5)
        self._terminate()
