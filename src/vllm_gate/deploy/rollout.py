"""Watch a model rollout and fail fast with a diagnosis instead of sitting out Helm's timeout."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.rest import ApiException

from vllm_gate.base.errors import RolloutFailed

POLL_S = 1.0
PROGRESS_EVERY_S = 10.0
# An autoscaler may add a node; a pod still unschedulable after this is a real failure.
UNSCHEDULABLE_GRACE_S = 15.0
LOG_TAIL_LINES = 40
FATAL_WAITING = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CrashLoopBackOff",
                 "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
ADVICE = {
    "Unschedulable": "no node fits: check resources.gpu_type, free nvidia.com/gpu and the GPU taint",
    "ImagePullBackOff": "the image cannot be pulled: check image.repository and image.tag",
    "ErrImagePull": "the image cannot be pulled: check image.repository and image.tag",
    "InvalidImageName": "the image name is invalid: check image.repository and image.tag",
    "CrashLoopBackOff": "the server keeps crashing: read the log tail below",
    "OOMKilled": "out of memory: raise resources.memory_limit or lower vllm.max_model_len",
    "CreateContainerConfigError": "the pod spec references something missing (a Secret?)",
    "ProgressDeadlineExceeded": "the rollout exceeded its deadline: startup probe never passed",
}


@dataclass(frozen=True)
class RolloutTarget:
    namespace: str
    deployment: str
    selector: str  # label selector of the release's pods


def deployment_complete(dep: client.V1Deployment) -> tuple[bool, str]:
    """kubectl's DeploymentStatusViewer: (done, what it is waiting for). Raises on a dead deadline."""
    status, spec = dep.status, dep.spec
    if (dep.metadata.generation or 0) > (status.observed_generation or 0):
        return False, "waiting for the controller to observe the new spec"
    for cond in status.conditions or []:
        if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
            raise RolloutFailed(f"deployment {dep.metadata.name}: ProgressDeadlineExceeded; "
                                f"{ADVICE['ProgressDeadlineExceeded']}", cond.message or "")
    want, updated = spec.replicas or 0, status.updated_replicas or 0
    if updated < want:
        return False, f"{updated}/{want} replicas updated"
    if (status.replicas or 0) > updated:
        return False, f"{(status.replicas or 0) - updated} old replicas terminating"
    if (status.available_replicas or 0) < updated:
        return False, f"{status.available_replicas or 0}/{updated} replicas available"
    return True, f"{updated}/{want} ready"


def pod_failure(pod: client.V1Pod, now: float, unschedulable_grace_s: float = UNSCHEDULABLE_GRACE_S
                ) -> tuple[str, str] | None:
    """Return (reason, message) when ``pod`` cannot become ready without a change, else None."""
    for cond in pod.status.conditions or []:
        if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
            since = cond.last_transition_time.timestamp() if cond.last_transition_time else now
            if now - since >= unschedulable_grace_s:
                return "Unschedulable", cond.message or ""
    for cs in pod.status.container_statuses or []:
        waiting = cs.state.waiting if cs.state else None
        if waiting and waiting.reason in FATAL_WAITING:
            last = cs.last_state.terminated if cs.last_state else None
            if last and last.reason == "OOMKilled":
                return "OOMKilled", f"container {cs.name} was OOMKilled (exit {last.exit_code})"
            return waiting.reason, waiting.message or ""
        terminated = cs.state.terminated if cs.state else None
        if terminated and terminated.reason == "OOMKilled":
            return "OOMKilled", f"container {cs.name} was OOMKilled (exit {terminated.exit_code})"
    return None


def describe_pod(core: client.CoreV1Api, pod: client.V1Pod) -> str:
    """Events and a log tail for ``pod``: the detail under a failure's summary line."""
    ns, name = pod.metadata.namespace, pod.metadata.name
    lines = [f"pod {ns}/{name}: phase {pod.status.phase}, node {pod.spec.node_name or '-'}"]
    try:
        events = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}",
                                            _request_timeout=10).items
        for ev in sorted(events, key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)[-10:]:
            lines.append(f"  event {ev.type} {ev.reason}: {ev.message}")
    except ApiException as exc:
        lines.append(f"  events unavailable: HTTP {exc.status}")
    if not pod.spec.node_name:
        return "\n".join(lines)  # never scheduled: there is no log
    try:
        log = core.read_namespaced_pod_log(name, ns, tail_lines=LOG_TAIL_LINES, _request_timeout=10) or ""
        lines += ["  log tail:", *(f"    {ln}" for ln in log.splitlines())]
    except ApiException as exc:
        lines.append(f"  log unavailable: HTTP {exc.status} {exc.reason}")
    return "\n".join(lines)


def pod_summary(pod: client.V1Pod) -> str:
    states = []
    for cs in pod.status.container_statuses or []:
        waiting = cs.state.waiting if cs.state else None
        states.append(waiting.reason if waiting else ("ready" if cs.ready else "running"))
    return f"{pod.metadata.name}: {pod.status.phase}" + (f" ({', '.join(states)})" if states else "")


def wait_ready(api: client.ApiClient, target: RolloutTarget, timeout_s: float,
               progress: Callable[[str], None], unschedulable_grace_s: float = UNSCHEDULABLE_GRACE_S) -> str:
    """Wait until the rollout completes; raise RolloutFailed at the first sign it cannot."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    started = time.monotonic()
    deadline = started + timeout_s
    last_report = started
    waiting_for = "deployment not created yet"
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(target.namespace, label_selector=target.selector, _request_timeout=15).items
        for pod in pods:
            failure = pod_failure(pod, time.time(), unschedulable_grace_s)
            if failure:
                reason, message = failure
                raise RolloutFailed(f"{pod.metadata.name}: {reason}; {ADVICE.get(reason, message)}",
                                    f"{message}\n{describe_pod(core, pod)}")
        try:
            dep = apps.read_namespaced_deployment(target.deployment, target.namespace, _request_timeout=15)
            done, waiting_for = deployment_complete(dep)
            if done:
                return f"deployment {target.deployment}: {waiting_for} in {time.monotonic() - started:.0f} s"
        except ApiException as exc:
            if exc.status != 404:
                raise
        if time.monotonic() - last_report >= PROGRESS_EVERY_S:
            last_report = time.monotonic()
            pod_states = "; ".join(pod_summary(p) for p in pods) or "no pods yet"
            progress(f"rollout {target.namespace}/{target.deployment}: {waiting_for} "
                     f"[{pod_states}] {last_report - started:.0f} s")
        time.sleep(POLL_S)
    pods = core.list_namespaced_pod(target.namespace, label_selector=target.selector, _request_timeout=15).items
    detail = "\n".join(describe_pod(core, p) for p in pods) or "no pods were created"
    raise RolloutFailed(f"rollout {target.namespace}/{target.deployment}: not ready within {timeout_s:.0f} s "
                        f"({waiting_for})", detail)
