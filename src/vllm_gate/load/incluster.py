"""The load test from where the router sits: a Locust master and workers as pods in the router's namespace, with
the router's labels, against the model Service's cluster DNS name, so neither a tunnel nor one process on the
gate's machine is what gets measured.

The workers send every request's raw record to the master (a Locust custom message); the master writes them to a
file on an emptyDir and prints a progress line every few seconds, which the gate reads from its log. At the end
the gate copies the file out with ``kubectl exec`` from a second container that outlives Locust in the master pod.
Not the log stream: the kubelet rotates container logs (10 MiB by default) and the log API then returns only the
newest file, while a long run's records reach tens of MB. Every pod and the ConfigMap are deleted at the end,
whatever happened (a dead worker, an error, Ctrl-C); a crashed gate's are stopped by their active deadline and
removed by the next run.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from vllm_gate.base.errors import GateError
from vllm_gate.base.pod_owner import controller_reference
from vllm_gate.base.tools import require_tool
from vllm_gate.deploy.rollout import pod_failure
from vllm_gate.load.pods import (
    EXPIRES_ANNOTATION,
    LOAD_LABEL,
    LOCUST_CONTAINER,
    RECORDS_CONTAINER,
    SAMPLES_FILE,
    TARGET_ANNOTATION,
    USERS_PER_WORKER,
    WORKERS_CONNECT_S,
    LoadPlan,
    configmap_manifest,
    master_manifest,
    read_progress,
    worker_count,
    worker_manifest,
)
from vllm_gate.load.profile import STOP_TIMEOUT_S, profile_args
from vllm_gate.load.samples import LoadFailed, LoadRun, read_samples
from vllm_gate.spec import Load, ModelSpec

LOAD_FROM = ("cluster", "local")  # --load-from
PROGRESS_MARK = "vllm-gate-progress "  # the locustfile's master prints these (loadtests/locustfile.py)
WORKERS_MARK = "vllm-gate-workers "
SAID_MARK = "vllm-gate: "  # what the locustfile says went wrong (users that died)
POLL_S = 0.5
PROGRESS_EVERY_S = 5.0
REQUEST_TIMEOUT_S = 15  # one Kubernetes API call
# After the run: the workers finish their requests in flight (the stop timeout); Locust's master waits up to the
# stop timeout + 60 s for them, then quits.
END_ALLOWANCE_S = STOP_TIMEOUT_S + 90
COPY_TIMEOUT_S = 300
LOG_TAIL_LINES = 30
PROGRESS_TAIL_LINES = 20

Progress = Callable[[str], None]


def load_budget_s(load: Load) -> float:
    """The longest a load test may take, from creating its pods to its samples copied out (a local one takes less):
    its workers connecting, the profile's run, the requests in flight at its end, the copy. The active deadline of
    its pods and the pytest timeout of the check that runs it follow it."""
    _, duration_s = profile_args(load)
    return WORKERS_CONNECT_S + duration_s + END_ALLOWANCE_S + COPY_TIMEOUT_S


@dataclass
class InClusterRun:
    """What an in-cluster load test did: its samples (as the local runner returns them) and who ran it."""

    load: LoadRun
    plan: LoadPlan
    records_by_worker: dict[str, int] = field(default_factory=dict)  # worker pod -> records it sent


def router_namespace(spec: ModelSpec) -> str:
    return spec.network.router_namespace or spec.namespace


def remove_leftovers(core: client.CoreV1Api, namespace: str, url: str, now: float) -> list[str]:
    """Delete load pods and ConfigMaps a crashed run left: every one aimed at ``url`` (two load tests of one model
    cannot both be right), and any other whose expiry has passed. Returns ``kind/name`` of each removed."""
    removed = []
    kinds = (("pod", core.list_namespaced_pod, core.delete_namespaced_pod),
             ("configmap", core.list_namespaced_config_map, core.delete_namespaced_config_map))
    for kind, list_them, delete in kinds:
        for item in list_them(namespace, label_selector=LOAD_LABEL, _request_timeout=REQUEST_TIMEOUT_S).items:
            notes = item.metadata.annotations or {}
            try:
                expired = float(notes.get(EXPIRES_ANNOTATION, "0")) < now
            except ValueError:
                expired = True
            if notes.get(TARGET_ANNOTATION) == url or expired:
                with contextlib.suppress(ApiException):  # gone meanwhile
                    delete(item.metadata.name, namespace, grace_period_seconds=0, _request_timeout=REQUEST_TIMEOUT_S)
                removed.append(f"{kind}/{item.metadata.name}")
    return removed


class InClusterLoad:
    """One run: create, watch, collect, and always delete."""

    def __init__(self, api: client.ApiClient, spec: ModelSpec, url: str, *, image: str, workdir: Path,
                 progress: Progress,
                 kubeconfig: Path | None, context: str | None, users_per_worker: int = USERS_PER_WORKER) -> None:
        self.core = client.CoreV1Api(api)
        self.spec = spec
        self.workdir = workdir
        self.progress = progress
        self.kubeconfig = kubeconfig
        self.context = context
        _, self.duration_s = profile_args(spec.load)
        # The pods' whole life: start, run, the end, the copy; then they stop by themselves.
        active_deadline_s = math.ceil(load_budget_s(spec.load))
        self.plan = LoadPlan(
            run_id=secrets.token_hex(3), namespace=router_namespace(spec), router_labels=spec.network.router_pod_labels,
            url=url, served_model=spec.served_name, load=spec.load, image=image,
            workers=worker_count(spec.load, users_per_worker), expires_at=math.ceil(time.time() + active_deadline_s),
            active_deadline_s=active_deadline_s)
        self.result = InClusterRun(LoadRun([], 0.0, math.nan, workdir / "locust.log"), self.plan)
        self._created: list[tuple[str, str]] = []  # (kind, name), to delete
        self._owner: client.V1ConfigMap | None = None  # the run's ConfigMap, controller of its pods

    # -- the run ----------------------------------------------------------------------------------------------

    def describe(self) -> str:
        return self.plan.describe()

    def run(self) -> LoadRun:
        """The ``LoadRunner`` entry point: the samples of start_and_collect."""
        return self.start_and_collect().load

    def start_and_collect(self) -> InClusterRun:
        """Run the load test and return its samples; everything it created is deleted before this returns."""
        plan = self.plan
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self._check_namespace()
        removed = remove_leftovers(self.core, plan.namespace, plan.url, time.time())
        if removed:
            self.progress(f"load: removed what a crashed run left in {plan.namespace}: {', '.join(removed)}")
        try:
            self._create("configmap", configmap_manifest(plan, self.duration_s))
            self._create("pod", master_manifest(plan))
            master_ip = self._wait_master_running(started + WORKERS_CONNECT_S)
            for name in plan.worker_names:
                self._create("pod", worker_manifest(plan, name, master_ip))
            self._watch(started)
            self._collect()
        finally:
            self._delete_all()
        self.result.load.wall_s = time.monotonic() - started
        return self.result

    def _check_namespace(self) -> None:
        try:
            self.core.read_namespace(self.plan.namespace, _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as exc:
            if exc.status != 404:
                raise
            raise LoadFailed(f"the router's namespace {self.plan.namespace} does not exist on this cluster: the "
                             "in-cluster load test runs there (use --load-from local to load through a "
                             "port-forward)") from None

    def _create(self, kind: str, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        if kind == "pod":
            # Owned by the run's ConfigMap: the router's ReplicaSet would otherwise adopt (and delete) these pods,
            # which carry its labels; the garbage collector removes them with the ConfigMap.
            manifest["metadata"]["ownerReferences"] = [controller_reference(self._owner)]
        create = self.core.create_namespaced_pod if kind == "pod" else self.core.create_namespaced_config_map
        self._created.append((kind, name))  # before: an interrupt right after the server accepted it still deletes it
        try:
            created = create(self.plan.namespace, manifest, _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as exc:
            hint = (f": the gate may not create {kind}s in {self.plan.namespace}; grant it, or use --load-from local"
                    if exc.status == 403 else "")
            raise LoadFailed(f"load: {kind} {self.plan.namespace}/{name} not created: HTTP {exc.status} "
                             f"{exc.reason}{hint}", str(exc.body or "")[:500]) from None
        if kind == "configmap":
            self._owner = created

    def _pods(self) -> dict[str, client.V1Pod]:
        pods = self.core.list_namespaced_pod(self.plan.namespace, label_selector=f"{LOAD_LABEL}={self.plan.run_id}",
                                             _request_timeout=REQUEST_TIMEOUT_S).items
        return {pod.metadata.name: pod for pod in pods}

    def _wait_master_running(self, deadline: float) -> str:
        """The master's pod IP once Locust runs in it (the workers connect to it: no Service needed)."""
        while True:
            master = self._pods().get(self.plan.master)
            if master is None or master.metadata.deletion_timestamp:
                raise LoadFailed(f"load master {self.plan.namespace}/{self.plan.master} was deleted while starting")
            self._fail_if_stuck(master, "master")
            terminated = _terminated(master)
            if terminated is not None:
                raise LoadFailed(f"load master {self.plan.master} exited while starting ({_exit(terminated)})",
                                 self._log_tail(self.plan.master))
            if _running(master) and master.status.pod_ip:
                return str(master.status.pod_ip)
            if time.monotonic() > deadline:
                raise LoadFailed(f"load master {self.plan.master} not running within {WORKERS_CONNECT_S} s "
                                 f"(phase {master.status.phase}{_conditions(master)})")
            time.sleep(POLL_S)

    def _watch(self, started: float) -> None:
        """Until the master's Locust exits: fail at once when a worker dies, say how far the run is."""
        plan = self.plan
        deadline = started + WORKERS_CONNECT_S + self.duration_s + END_ALLOWANCE_S
        last_progress = time.monotonic()
        while True:
            pods = self._pods()
            master = pods.get(plan.master)
            if master is None or master.metadata.deletion_timestamp:
                raise LoadFailed(f"load master {plan.namespace}/{plan.master} was deleted mid-run")
            terminated = _terminated(master)
            if terminated is not None:
                if terminated.exit_code != 0:
                    said = [line for line in self._log(plan.master).splitlines() if line.startswith(SAID_MARK)]
                    why = f": {said[0].removeprefix(SAID_MARK)}" if said else f" ({terminated.reason or 'no reason'})"
                    raise LoadFailed(f"the Locust master {plan.master} exited with status {terminated.exit_code}{why}",
                                     self._log_tail(plan.master))
                return
            self._fail_if_stuck(master, "master")
            for name in plan.worker_names:
                self._check_worker(name, pods.get(name))
            if time.monotonic() > deadline:
                raise LoadFailed(f"the in-cluster load test did not finish within "
                                 f"{deadline - started:.0f} s", self._log_tail(plan.master))
            if time.monotonic() - last_progress >= PROGRESS_EVERY_S:
                last_progress = time.monotonic()
                self._report_progress()
            time.sleep(POLL_S)

    def _check_worker(self, name: str, pod: client.V1Pod | None) -> None:
        where = f"load worker {self.plan.namespace}/{name}"
        if pod is None:
            raise LoadFailed(f"{where} is gone mid-run (deleted): the load it drove is missing from the run")
        if pod.metadata.deletion_timestamp:
            raise LoadFailed(f"{where} was deleted mid-run: the load it drove is missing from the run")
        self._fail_if_stuck(pod, "worker")
        terminated = _terminated(pod)
        if terminated is not None:
            raise LoadFailed(f"{where} died mid-run ({_exit(terminated)})", self._log_tail(name))

    def _fail_if_stuck(self, pod: client.V1Pod, role: str) -> None:
        failure = pod_failure(pod, time.time())
        if failure is None and pod.status.phase == "Failed":
            failure = (pod.status.reason or "Failed", pod.status.message or "")
        if failure is not None:
            reason, message = failure
            hint = (f"; the image {self.plan.image} is not on the node and cannot be pulled: point --load-image at a "
                    "mirror" if "Pull" in reason else "")
            raise LoadFailed(f"load {role} {self.plan.namespace}/{pod.metadata.name}: {reason}{hint}", message)

    def _report_progress(self) -> None:
        latest = None
        for line in self._log(self.plan.master, tail_lines=PROGRESS_TAIL_LINES).splitlines():
            latest = read_progress(line, PROGRESS_MARK) or latest
        if latest is None:
            self.progress(f"load {self.spec.served_name} (in-cluster): waiting for the master's first report")
            return
        for worker_id in latest.get("missing", []):
            # Locust names a worker <hostname>_<uuid>; a pod's hostname is its name.
            raise LoadFailed(f"load worker {self.plan.namespace}/{str(worker_id).rsplit('_', 1)[0]}: the master "
                             "lost it mid-run (no heartbeat): the load it drove is missing from the run")
        self.progress(f"load {self.spec.served_name} (in-cluster, {latest.get('workers', '?')}/{self.plan.workers} "
                      f"workers): {latest.get('requests', 0)} requests, {latest.get('errors', 0)} errors, "
                      f"{float(latest.get('elapsed_s', 0)):.0f}/{self.duration_s:.0f} s")

    # -- the records ------------------------------------------------------------------------------------------

    def _collect(self) -> None:
        """Copy the samples file out of the master pod, keep its log, count each worker's records."""
        log = self._log(self.plan.master)
        self.result.load.log_path.write_text(log)
        for line in log.splitlines():
            counts = read_progress(line, WORKERS_MARK)
            if counts is not None:
                self.result.records_by_worker = {str(k).rsplit("_", 1)[0]: int(v) for k, v in counts.items()}
        samples_path = self.workdir / "samples.jsonl"
        self._copy_out(SAMPLES_FILE, samples_path)
        self.result.load.samples = read_samples(samples_path)
        if not self.result.load.samples:
            raise LoadFailed(f"the in-cluster load test recorded no requests; see {self.result.load.log_path}",
                             "\n".join(log.splitlines()[-LOG_TAIL_LINES:]))

    def _copy_out(self, source: str, target: Path) -> None:
        """``kubectl exec`` the records container, its Python writing the file to stdout, into ``target``."""
        command = [str(require_tool("kubectl"))]
        if self.kubeconfig:
            command += ["--kubeconfig", str(self.kubeconfig)]
        if self.context:
            command += ["--context", self.context]
        # python3, not cat: the upstream image has both, the local node's only Python.
        command += ["-n", self.plan.namespace, "exec", self.plan.master, "-c", RECORDS_CONTAINER, "--", "python3",
                    "-c", f"import shutil, sys; shutil.copyfileobj(open({source!r}, 'rb'), sys.stdout.buffer)"]
        try:
            with target.open("wb") as out:
                done = subprocess.run(command, stdout=out, stderr=subprocess.PIPE, timeout=COPY_TIMEOUT_S,
                                      check=False)
        except subprocess.TimeoutExpired:
            raise LoadFailed(f"copying the samples out of {self.plan.master} took over {COPY_TIMEOUT_S} s") from None
        if done.returncode != 0:
            raise LoadFailed(f"copying the samples out of {self.plan.namespace}/{self.plan.master} failed (kubectl "
                             f"exit {done.returncode})", done.stderr.decode(errors="replace").strip()[-500:])

    def _log(self, pod: str, tail_lines: int | None = None) -> str:
        try:
            return self.core.read_namespaced_pod_log(pod, self.plan.namespace, container=LOCUST_CONTAINER,
                                                     tail_lines=tail_lines, _request_timeout=REQUEST_TIMEOUT_S) or ""
        except ApiException as exc:
            return f"(log of {pod} unavailable: HTTP {exc.status} {exc.reason})"

    def _log_tail(self, pod: str) -> str:
        return f"log tail of {pod}:\n{self._log(pod, tail_lines=LOG_TAIL_LINES)}"

    # -- the end ----------------------------------------------------------------------------------------------

    def _delete_all(self) -> None:
        """Delete every pod and the ConfigMap this run created; one the API will not delete now is a leftover the
        next run removes (its active deadline stops it meanwhile)."""
        for kind, name in reversed(self._created):
            delete = self.core.delete_namespaced_pod if kind == "pod" else self.core.delete_namespaced_config_map
            try:
                delete(name, self.plan.namespace, grace_period_seconds=0, _request_timeout=REQUEST_TIMEOUT_S)
            except ApiException as exc:
                if exc.status != 404:
                    self.progress(f"load: {kind} {self.plan.namespace}/{name} not deleted (HTTP {exc.status}); the "
                                  "next run removes it")
            except Exception as exc:  # the API unreachable: still try the others, say which is left
                self.progress(f"load: {kind} {self.plan.namespace}/{name} not deleted ({type(exc).__name__}); the "
                              "next run removes it")


def run_incluster_load(api: client.ApiClient, spec: ModelSpec, url: str, *, image: str, workdir: Path,
                       progress: Progress, kubeconfig: Path | None, context: str | None,
                       users_per_worker: int = USERS_PER_WORKER) -> InClusterRun:
    """Drive ``spec.load`` at ``url`` from the router's namespace with Locust pods; return the samples and who ran
    them."""
    return InClusterLoad(api, spec, url, image=image, workdir=workdir, progress=progress, kubeconfig=kubeconfig,
                         context=context, users_per_worker=users_per_worker).start_and_collect()


def _terminated(pod: client.V1Pod) -> client.V1ContainerStateTerminated | None:
    for status in pod.status.container_statuses or []:
        if status.name == LOCUST_CONTAINER and status.state and status.state.terminated:
            return status.state.terminated
    return None


def _running(pod: client.V1Pod) -> bool:
    return any(s.name == LOCUST_CONTAINER and s.state and s.state.running for s in pod.status.container_statuses or [])


def _exit(terminated: client.V1ContainerStateTerminated) -> str:
    return f"exit {terminated.exit_code}, {terminated.reason or 'no reason'}"


def _conditions(pod: client.V1Pod) -> str:
    waiting = [c.message for c in pod.status.conditions or [] if c.status == "False" and c.message]
    return f": {'; '.join(waiting)}" if waiting else ""


def choose_load_from(asked: str | None, *, endpoint_only: bool, containers: bool) -> str:
    """``cluster`` or ``local``: what ``asked`` says, else cluster where the model's pods ran containers (so the
    Locust pods can run beside them), else local. ``containers``: the cluster runs containers and the model's pods
    did. Raises GateError when cluster is asked for where it cannot run."""
    if asked == "cluster":
        if endpoint_only:
            raise GateError("--load-from cluster needs the gate's cluster; with --endpoint-url the load test runs "
                            "from this machine (--load-from local)")
        if not containers:
            raise GateError("--load-from cluster: this cluster runs no containers for the model's pods (KWOK nodes), "
                            "so no Locust pod could run either; use --load-from local")
        return "cluster"
    if asked == "local":
        return "local"
    if asked is not None:
        raise GateError(f"--load-from {asked}: not one of {', '.join(LOAD_FROM)}")
    return "cluster" if containers and not endpoint_only else "local"
