"""The local cluster's data plane: a simulator per Ready model pod on a KWOK node, reached through a KWOK
PortForward; a pod on the real node runs its own container, which the cluster's Prometheus pod scrapes, and which the
recorded dcgm-exporter reads (whether it has load) through a ``kubectl port-forward`` (the host is outside the pod
network, where the release's NetworkPolicy refuses it)."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException

from vllm_gate.base.errors import GateError
from vllm_gate.base.exits import exit_text
from vllm_gate.base.ports import free_port
from vllm_gate.cluster.children import record_child
from vllm_gate.cluster.dataplane.portforward import PortForward
from vllm_gate.cluster.dataplane.prometheus import MODEL_JOB, LocalPrometheus
from vllm_gate.cluster.dataplane.sim import sim_args_from_pod, sim_binary, start_process, stop_process
from vllm_gate.cluster.gpu_nodes import GPU_RESOURCE

MODEL_POD_SELECTOR = "app.kubernetes.io/component=serving-engine"
POLL_S = 0.5
PF_GROUP, PF_VERSION, PF_PLURAL = "kwok.x-k8s.io", "v1alpha1", "portforwards"
# A simulator that keeps failing is retried after 1, 2, 4, ... s, never more than RETRY_MAX_S apart.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0
STABLE_S = 30.0  # a simulator that ran this long before exiting starts a fresh back-off
REPEAT_REPORT_AT = 3  # failures of one pod reported: the first, and once more at this count
LOG_TAIL_LINES = 3
REASON_MAX_CHARS = 400

Key = tuple[str, str]  # (namespace, pod name)


def _ready(pod: client.V1Pod) -> bool:
    if pod.metadata.deletion_timestamp or pod.status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def log_tail(path: Path, offset: int) -> str:
    """The last lines ``path`` got after ``offset`` (one run's output in an appended log), on one line."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"(log {path} unreadable: {exc.strerror})"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    tail = " | ".join(lines[-LOG_TAIL_LINES:]) or "(no output)"
    return tail if len(tail) <= REASON_MAX_CHARS else "..." + tail[-REASON_MAX_CHARS:]


@dataclass(frozen=True)
class ServedPod:
    """A model pod the data plane serves: where its simulator listens and what the pod asked for."""

    namespace: str
    pod: str
    container: str
    node: str
    gpus: int
    address: str  # host:port of its HTTP server, reachable from this machine


@dataclass
class _Sim:
    """A running simulator and where its output of this run starts."""

    proc: subprocess.Popen[bytes]
    port: int
    pod: ServedPod
    log: Path
    log_offset: int
    started: float
    announced: bool  # its address was reported (a retry's only once it has run for STABLE_S)


@dataclass
class _Failures:
    """What kept one pod's simulator from running."""

    count: int = 0
    streak: int = 0  # failures since it last ran for STABLE_S: sets the back-off
    reason: str = ""
    retry_at: float = 0.0


class DataPlane:
    """Watch model pods; start a simulator for each Ready one, stop it when the pod goes.

    A simulator that will not start or exits is reported through ``progress`` with the reason and
    retried with back-off; ``failures()`` lists every such pod and every error of the watch itself.
    """

    def __init__(self, api: client.ApiClient, cluster_dir: Path, progress: Callable[[str], None],
                 prometheus: LocalPrometheus | None = None, real_nodes: frozenset[str] = frozenset(),
                 kubeconfig: Path | None = None, context: str | None = None) -> None:
        """``real_nodes``: nodes whose kubelet runs the pods for real (no simulator here; a port-forward for the
        scrape, with ``kubeconfig`` and ``context``)."""
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._dir = cluster_dir
        self._progress = progress
        self._prometheus = prometheus
        self._sims: dict[Key, _Sim] = {}
        self._real_nodes = real_nodes
        self._kubeconfig, self._context = kubeconfig, context
        self._real: dict[Key, tuple[ServedPod, PortForward]] = {}  # Ready pods on a real node
        self._failures: dict[Key, _Failures] = {}
        self._errors: dict[str, int] = {}  # the watch's own errors, counted
        self._lock = threading.Lock()  # failures() reads from another thread
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vllm-gate-dataplane", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and stop every simulator; safe to call twice."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(15)
        for key in list(self._sims):
            self._drop(key)
        for key in list(self._real):
            self._real.pop(key)[1].stop()

    def served(self) -> list[ServedPod]:
        """The pods served now: those a simulator answers for and those running on a real node (read from other
        threads: a copy)."""
        return [sim.pod for sim in list(self._sims.values())] + [pod for pod, _ in list(self._real.values())]

    def _publish_targets(self) -> None:
        """Tell the host's Prometheus where each simulator's /metrics is, labelled as Kubernetes discovery would
        label its pod (a pod on a real node is found by the cluster's own Prometheus: cluster_prometheus.py)."""
        if self._prometheus is not None:
            self._prometheus.set_targets(MODEL_JOB, [
                (sim.pod.address, {"namespace": sim.pod.namespace, "pod": sim.pod.pod, "container": sim.pod.container})
                for sim in list(self._sims.values())])

    def failures(self) -> list[str]:
        """One line per pod whose simulator would not start or exited, and per error of the watch."""
        with self._lock:
            pods = [f"simulator for pod {ns}/{name} failed {_times(f.count)}; last: {f.reason}"
                    for (ns, name), f in sorted(self._failures.items())]
            errors = [f"data plane: {message} ({_times(count)})" for message, count in self._errors.items()]
        return pods + errors

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as exc:  # keep serving; the gate's own checks will see a broken pod
                self._error(f"{type(exc).__name__}: {' '.join(str(exc).split())[:REASON_MAX_CHARS]}")
            self._stop.wait(POLL_S)

    def _error(self, message: str) -> None:
        with self._lock:
            self._errors[message] = self._errors.get(message, 0) + 1
            first = self._errors[message] == 1
        if first:
            self._progress(f"local cluster: data plane error, retrying: {message}")

    def _sync(self) -> None:
        pods = self._core.list_pod_for_all_namespaces(label_selector=MODEL_POD_SELECTOR, _request_timeout=10).items
        ready = {(p.metadata.namespace, p.metadata.name): p for p in pods if _ready(p)}
        real = {key: pod for key, pod in ready.items() if pod.spec.node_name in self._real_nodes}
        self._sync_real(real)
        ready = {key: pod for key, pod in ready.items() if key not in real}
        for key in set(self._sims) - set(ready):
            self._drop(key)
        for key, pod in ready.items():
            sim = self._sims.get(key)
            if sim is not None:
                if sim.proc.poll() is None:
                    if not sim.announced and time.monotonic() - sim.started >= STABLE_S:
                        sim.announced = True
                        self._progress(f"local cluster: simulator for pod {key[0]}/{key[1]} running again on "
                                       f"{sim.pod.address} after {self._failure_count(key)} failures")
                    continue
                self._drop(key)
                self._failed(key, f"exited ({exit_text(sim.proc.returncode)}): {log_tail(sim.log, sim.log_offset)}",
                             ran_s=time.monotonic() - sim.started)
            with self._lock:
                failures = self._failures.get(key)
                waiting = failures is not None and time.monotonic() < failures.retry_at
            if not waiting:
                self._serve(key, pod)

    def _sync_real(self, ready: dict[Key, client.V1Pod]) -> None:
        """A port-forward per Ready pod on a real node (where the recorded dcgm-exporter reads whether it has load),
        closed when the pod goes."""
        for key in set(self._real) - set(ready):
            self._real.pop(key)[1].stop()
        for key, pod in ready.items():
            if key in self._real:
                continue
            forward = PortForward(key[0], f"pod/{key[1]}", _container_port(pod), kubeconfig=self._kubeconfig,
                                  context=self._context, progress=self._progress)
            forward.start()
            self._real[key] = (_served(pod, f"127.0.0.1:{forward.local_port}"), forward)
            self._progress(f"local cluster: pod {key[0]}/{key[1]} runs on real node {pod.spec.node_name}; "
                           f"its load read through port-forward 127.0.0.1:{forward.local_port}")

    def _failure_count(self, key: Key) -> int:
        with self._lock:
            failures = self._failures.get(key)
            return failures.count if failures else 0

    def _failed(self, key: Key, reason: str, ran_s: float) -> None:
        """Record a failure, report it (the first and the REPEAT_REPORT_AT-th), and schedule the retry."""
        with self._lock:
            failures = self._failures.setdefault(key, _Failures())
            failures.count += 1
            failures.streak = 1 if ran_s >= STABLE_S else failures.streak + 1
            failures.reason = reason
            delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (failures.streak - 1))
            failures.retry_at = time.monotonic() + delay
            count = failures.count
        namespace, name = key
        if count == 1:
            self._progress(f"local cluster: simulator for pod {namespace}/{name} {reason}; "
                           f"next try in {delay:.0f} s")
        elif count == REPEAT_REPORT_AT:
            self._progress(f"local cluster: simulator for pod {namespace}/{name} failed {count} times "
                           f"(last: {reason}); next try in {delay:.0f} s, backing off to {RETRY_MAX_S:.0f} s; "
                           "further failures are only counted")

    def _serve(self, key: Key, pod: client.V1Pod) -> None:
        namespace, name = key
        container = pod.spec.containers[0]
        container_port = _container_port(pod)
        port = free_port()
        log = self._dir / f"sim-{namespace}-{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        try:
            args = sim_args_from_pod(list(container.args or []), port, pod.metadata.annotations)
            proc = start_process(sim_binary(), args, log)
        except GateError as exc:
            self._failed(key, f"could not start: {exc.summary}", ran_s=0)
            return
        except OSError as exc:
            self._failed(key, f"could not start: {exc}", ran_s=0)
            return
        # A retry is announced once it has stayed up, not on every try.
        announced = self._failure_count(key) == 0
        served = _served(pod, f"127.0.0.1:{port}")
        self._sims[key] = _Sim(proc, port, served, log, offset, time.monotonic(), announced)
        record_child(self._dir, proc.pid)
        body = {"apiVersion": f"{PF_GROUP}/{PF_VERSION}", "kind": "PortForward",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"forwards": [{"ports": [container_port],
                                       "target": {"address": "127.0.0.1", "port": port}}]}}
        try:
            with contextlib.suppress(ApiException):
                self._custom.delete_namespaced_custom_object(PF_GROUP, PF_VERSION, namespace, PF_PLURAL, name,
                                                             _request_timeout=10)
            self._custom.create_namespaced_custom_object(PF_GROUP, PF_VERSION, namespace, PF_PLURAL, body,
                                                         _request_timeout=10)
        except ApiException as exc:
            # Without its PortForward the simulator is unreachable: stop it and try both again later.
            self._drop(key)
            self._failed(key, f"PortForward not created: HTTP {exc.status} {exc.reason}", ran_s=0)
            return
        self._publish_targets()
        if announced:
            self._progress(f"local cluster: simulator for pod {namespace}/{name} on 127.0.0.1:{port}")

    def _drop(self, key: Key) -> None:
        namespace, name = key
        sim = self._sims.pop(key)
        self._publish_targets()
        stop_process(sim.proc)
        with contextlib.suppress(ApiException):
            self._custom.delete_namespaced_custom_object(PF_GROUP, PF_VERSION, namespace, PF_PLURAL, name,
                                                         _request_timeout=10)


def _container_port(pod: client.V1Pod) -> int:
    return next((p.container_port for p in pod.spec.containers[0].ports or []), 8000)


def _served(pod: client.V1Pod, address: str) -> ServedPod:
    """What the data plane serves for ``pod`` (its first container) at ``address``."""
    container = pod.spec.containers[0]
    gpus = int((container.resources.limits or {}).get(GPU_RESOURCE, 0)) if container.resources else 0
    return ServedPod(pod.metadata.namespace, pod.metadata.name, container.name, pod.spec.node_name or "", gpus,
                     address)


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"
