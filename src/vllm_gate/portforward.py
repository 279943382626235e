"""Reach a Service from outside the cluster with ``kubectl port-forward``, restarted if it drops."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from vllm_gate.errors import ClusterError
from vllm_gate.lifecycle import Started
from vllm_gate.ports import free_port, port_open
from vllm_gate.tools import require_tool

START_TIMEOUT_S = 20


class PortForward(Started):
    """``kubectl port-forward svc/NAME LOCAL:REMOTE`` on a fixed local port, kept alive by a monitor."""

    def __init__(self, namespace: str, target: str, remote_port: int, *, kubeconfig: Path | None,
                 context: str | None) -> None:
        self.namespace = namespace
        self.target = target  # "svc/name" or "pod/name"
        self.remote_port = remote_port
        self.local_port = free_port()
        self.restarts = 0
        self._kubeconfig = kubeconfig
        self._context = context
        self._proc: subprocess.Popen[str] | None = None
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._keep_alive, name="vllm-gate-port-forward", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def _command(self) -> list[str]:
        cmd = [str(require_tool("kubectl"))]
        if self._kubeconfig:
            cmd += ["--kubeconfig", str(self._kubeconfig)]
        if self._context:
            cmd += ["--context", self._context]
        return [*cmd, "-n", self.namespace, "port-forward", "--address", "127.0.0.1", self.target,
                f"{self.local_port}:{self.remote_port}"]

    def _spawn(self) -> None:
        self._proc = subprocess.Popen(self._command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                output = (self._proc.stdout.read() if self._proc.stdout else "").strip()
                raise ClusterError(f"kubectl port-forward {self.target} -n {self.namespace} exited "
                                   f"({self._proc.returncode}): {output.splitlines()[-1] if output else ''}", output)
            if port_open(self.local_port):
                return
            time.sleep(0.1)
        self._terminate()
        raise ClusterError(f"kubectl port-forward {self.target} -n {self.namespace}: no local port "
                           f"{self.local_port} within {START_TIMEOUT_S} s")

    def _keep_alive(self) -> None:
        while not self._stop.wait(0.5):
            if self._proc is not None and self._proc.poll() is not None:
                self.restarts += 1
                try:
                    self._spawn()
                except ClusterError:
                    continue  # try again on the next tick; the checks report the outage

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
