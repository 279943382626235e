"""The local cluster's data plane: a simulator per Ready model pod, reached through a KWOK PortForward."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException

from vllm_gate.ports import free_port
from vllm_gate.sim import sim_args_from_pod, sim_binary, start_process, stop_process

MODEL_POD_SELECTOR = "app.kubernetes.io/component=serving-engine"
SIMS_PID_FILE = "vllm-gate-sims.pids"
POLL_S = 0.5
PF_GROUP, PF_VERSION, PF_PLURAL = "kwok.x-k8s.io", "v1alpha1", "portforwards"


def kill_recorded_sims(cluster_dir: Path) -> None:
    """Kill the simulators recorded for a cluster (after a crash of the process that started them)."""
    pidfile = cluster_dir / SIMS_PID_FILE
    if not pidfile.exists():
        return
    for line in pidfile.read_text().split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(line), signal.SIGKILL)
    pidfile.unlink(missing_ok=True)


def _ready(pod: client.V1Pod) -> bool:
    if pod.metadata.deletion_timestamp or pod.status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


class DataPlane:
    """Watch model pods; start a simulator for each Ready one, stop it when the pod goes."""

    def __init__(self, api: client.ApiClient, cluster_dir: Path, progress: Callable[[str], None]) -> None:
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._dir = cluster_dir
        self._progress = progress
        self._sims: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vllm-gate-dataplane", daemon=True)
        self.errors: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        for key in list(self._sims):
            self._drop(key)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as exc:  # keep serving; the gate's own checks will see a broken pod
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(POLL_S)

    def _sync(self) -> None:
        pods = self._core.list_pod_for_all_namespaces(label_selector=MODEL_POD_SELECTOR, _request_timeout=10).items
        ready = {(p.metadata.namespace, p.metadata.name): p for p in pods if _ready(p)}
        for key in set(self._sims) - set(ready):
            self._drop(key)
        for key, pod in ready.items():
            proc = self._sims.get(key)
            if proc is None or proc.poll() is not None:
                self._serve(key, pod)

    def _serve(self, key: tuple[str, str], pod: client.V1Pod) -> None:
        namespace, name = key
        container = pod.spec.containers[0]
        container_port = next((p.container_port for p in container.ports or []), 8000)
        port = free_port()
        proc = start_process(sim_binary(), sim_args_from_pod(list(container.args or []), port),
                             self._dir / f"sim-{namespace}-{name}.log")
        self._sims[key] = proc
        with (self._dir / SIMS_PID_FILE).open("a") as f:
            f.write(f"{proc.pid}\n")
        body = {"apiVersion": f"{PF_GROUP}/{PF_VERSION}", "kind": "PortForward",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"forwards": [{"ports": [container_port],
                                       "target": {"address": "127.0.0.1", "port": port}}]}}
        with contextlib.suppress(ApiException):
            self._custom.delete_namespaced_custom_object(PF_GROUP, PF_VERSION, namespace, PF_PLURAL, name)
        self._custom.create_namespaced_custom_object(PF_GROUP, PF_VERSION, namespace, PF_PLURAL, body)
        self._progress(f"local cluster: simulator for pod {namespace}/{name} on 127.0.0.1:{port}")

    def _drop(self, key: tuple[str, str]) -> None:
        namespace, name = key
        proc = self._sims.pop(key)
        stop_process(proc)
        with contextlib.suppress(ApiException):
            self._custom.delete_namespaced_custom_object(PF_GROUP, PF_VERSION, namespace, PF_PLURAL, name,
                                                         _request_timeout=10)
