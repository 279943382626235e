"""A short-lived pod that makes one HTTP request from inside the cluster with curl, and reports what it got.

The pod runs the chart's helm test image (``tests.image``, curlimages/curl) with the chart's test pod security
contexts: the one image ``helm test`` already needs, so an air-gapped cluster mirrors nothing more.
"""

from __future__ import annotations

import contextlib
import math
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from vllm_gate.base.errors import ClusterError, RenderError
from vllm_gate.base.pod_owner import controller_reference, never_ready
from vllm_gate.deploy.render import render_manifests
from vllm_gate.deploy.values import chart_values
from vllm_gate.spec import ModelSpec

PROBE_LABEL = "vllm-gate/probe"  # on every probe pod, so a crashed run's leftovers can be found
# curl's exit codes (man curl, EXIT CODES)
CURL_OK, CURL_COULDNT_CONNECT, CURL_TIMED_OUT = 0, 7, 28
# After the transfer (and its retries) curl writes one line of its own: the status (000 without a response),
# how many connections it opened (0: none ever was) and its error message. The leading newline keeps it off the
# end of any other output.
MARKER = "vllm-gate-probe:"
WRITE_OUT = "\\n" + MARKER + " status=%{http_code} connects=%{num_connects} error=%{errormsg}\\n"
RESULT_LINE = re.compile(rf"^{MARKER} status=(\d{{3}}) connects=(\d+) error=(.*)$", re.MULTILINE)
# Pod states that never turn into a finished curl run: no point waiting out the timeout.
STUCK = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                   "CreateContainerError", "RunContainerError"})
POLL_S = 0.3
REQUEST_TIMEOUT_S = 15  # one Kubernetes API call
POD_START_ALLOWANCE_S = 60  # scheduling, image, sandbox and container start before curl's own time


@dataclass(frozen=True)
class ProbeTemplate:
    """What a probe pod runs: an image with curl, and the security contexts it runs under."""

    image: str
    pod_security_context: Mapping[str, Any] = field(default_factory=dict)
    container_security_context: Mapping[str, Any] = field(default_factory=dict)


def template_from_manifests(docs: list[dict[str, Any]]) -> ProbeTemplate:
    """The chart's helm test pod's image and security contexts, from its rendered manifests."""
    for doc in docs:
        if doc.get("kind") == "Pod" and doc["metadata"].get("annotations", {}).get("helm.sh/hook") == "test":
            spec = doc["spec"]
            container = spec["containers"][0]
            return ProbeTemplate(container["image"], dict(spec.get("securityContext") or {}),
                                 dict(container.get("securityContext") or {}))
    raise RenderError("the chart rendered no helm test pod: there is no tests.image to run probe pods with")


def chart_template(spec: ModelSpec) -> ProbeTemplate:
    """The probe template for ``spec``: the chart's test pod as rendered for it (helm template)."""
    return template_from_manifests(render_manifests(spec, chart_values(spec)))


class Outcome(StrEnum):
    ANSWERED = "answered"  # an HTTP response came back, whatever its status
    NO_CONNECTION = "no connection"  # refused, unreachable, or no connection within the time: never connected
    FAILED = "failed"  # anything else: a name that did not resolve, no answer on a connection, a pod that never ran


@dataclass(frozen=True)
class ProbeResult:
    """What one probe pod saw, and who it was (its labels, namespace, node and address)."""

    pod: str
    namespace: str
    labels: Mapping[str, str]  # the pod's, the probe label included
    outcome: Outcome
    status: int | None = None  # the HTTP status when ANSWERED
    detail: str = ""  # curl's error message, or why the pod gave no result
    exit_code: int | None = None  # curl's, None when it never ran to the end
    node: str = ""
    pod_ip: str = ""

    def describe(self) -> str:
        """One line: ``pod ns/name answered HTTP 200`` or ``pod ns/name: no connection (...)``."""
        where = f"pod {self.namespace}/{self.pod}" + (f" ({self.pod_ip} on {self.node})" if self.pod_ip else "")
        if self.outcome is Outcome.ANSWERED:
            return f"{where} got HTTP {self.status}"
        exit_code = f"curl exit {self.exit_code}: " if self.exit_code is not None else ""
        return f"{where}: {self.outcome.value} ({exit_code}{self.detail or 'no detail'})"


def curl_args(url: str, *, request_timeout_s: float, retries: int) -> list[str]:
    """curl's command line: one GET of ``url``, retried ``retries`` times, a second apart, on a refused connection
    and on curl's transient errors (a timeout, a name not resolved yet, 408/429/5xx) — a NetworkPolicy enforcer may
    admit a new pod's address a moment after it starts, and a refusal that outlasts the retries is a refusal."""
    return ["curl", "-sS", "-o", "/dev/null", "-w", WRITE_OUT, "--max-time", f"{request_timeout_s:g}",
            "--retry", str(retries), "--retry-connrefused", "--retry-delay", "1", url]


def classify(exit_code: int, log: str) -> tuple[Outcome, int | None, str]:
    """The outcome of one curl run from its exit code and output: (outcome, HTTP status, detail)."""
    found = RESULT_LINE.findall(log)
    if not found:  # curl never got to write its line: the container did not run it
        tail = " | ".join(line.strip() for line in log.strip().splitlines()[-3:])
        return Outcome.FAILED, None, f"the container exited {exit_code} without curl's result" + (
            f": {tail}" if tail else "")
    status, connects, error = found[-1]
    if exit_code == CURL_OK and status != "000":
        return Outcome.ANSWERED, int(status), ""
    never_connected = int(connects) == 0 and not error.startswith("Resolving timed out")
    if exit_code == CURL_COULDNT_CONNECT or (exit_code == CURL_TIMED_OUT and never_connected):
        return Outcome.NO_CONNECTION, None, error
    return Outcome.FAILED, None, error or f"curl exit {exit_code}"


def probe_pod_manifest(name: str, namespace: str, url: str, *, labels: Mapping[str, str], template: ProbeTemplate,
                       request_timeout_s: float, retries: int, lifetime_s: float) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {**labels, PROBE_LABEL: "true"}},
        "spec": {
            "restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
            "securityContext": dict(template.pod_security_context),
            "containers": [{
                "name": "probe", "image": template.image, "imagePullPolicy": "IfNotPresent",
                "command": curl_args(url, request_timeout_s=request_timeout_s, retries=retries),
                "securityContext": dict(template.container_security_context),
                # With the router's labels it would be an endpoint of the router's Service while curl runs.
                "readinessProbe": never_ready(math.ceil(lifetime_s)),
            }],
        },
    }


def run_probe(api: client.ApiClient, namespace: str, url: str, *, labels: Mapping[str, str], template: ProbeTemplate,
              request_timeout_s: float = 5, retries: int = 0, timeout_s: float | None = None,
              name_prefix: str = "vllm-gate-probe") -> ProbeResult:
    """Run one probe pod carrying ``labels`` against ``url`` and return what it saw. The pod is deleted afterwards,
    whatever happens (an error, Ctrl-C). Raises ClusterError only when the API server will not create it."""
    core = client.CoreV1Api(api)
    name = f"{name_prefix}-{secrets.token_hex(3)}"
    if timeout_s is None:  # curl's worst case: every try timing out, a second between tries
        timeout_s = POD_START_ALLOWANCE_S + (retries + 1) * request_timeout_s + retries
    manifest = probe_pod_manifest(name, namespace, url, labels=labels, template=template,
                                  request_timeout_s=request_timeout_s, retries=retries, lifetime_s=timeout_s)
    try:
        try:
            owner = core.create_namespaced_config_map(namespace, {"metadata": {
                "name": name, "labels": {PROBE_LABEL: "true"}}}, _request_timeout=REQUEST_TIMEOUT_S)
            manifest["metadata"]["ownerReferences"] = [controller_reference(owner)]
            core.create_namespaced_pod(namespace, manifest, _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as exc:
            raise ClusterError(f"probe pod {namespace}/{name}: not created: {exc.status} {exc.reason}",
                               str(exc.body or "")[:500]) from None
        return _wait_finished(core, namespace, name, timeout_s)
    finally:
        _delete(core, namespace, name)


def _delete(core: client.CoreV1Api, namespace: str, name: str) -> None:
    """Delete a probe's pod and its owning ConfigMap (either may not exist); a leftover goes with the next run."""
    with contextlib.suppress(ApiException):
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0, _request_timeout=REQUEST_TIMEOUT_S)
    with contextlib.suppress(ApiException):
        core.delete_namespaced_config_map(name, namespace, _request_timeout=REQUEST_TIMEOUT_S)


def _wait_finished(core: client.CoreV1Api, namespace: str, name: str, timeout_s: float) -> ProbeResult:
    deadline = time.monotonic() + timeout_s
    while True:
        pod = core.read_namespaced_pod(name, namespace, _request_timeout=REQUEST_TIMEOUT_S)
        statuses = pod.status.container_statuses or []
        where = {"pod": name, "namespace": namespace, "labels": dict(pod.metadata.labels or {}),
                 "node": pod.spec.node_name or "", "pod_ip": pod.status.pod_ip or ""}
        terminated = next((s.state.terminated for s in statuses if s.state and s.state.terminated), None)
        if terminated is not None:
            log = ""
            with contextlib.suppress(ApiException):
                log = core.read_namespaced_pod_log(name, namespace, _request_timeout=REQUEST_TIMEOUT_S)
            outcome, status, detail = classify(terminated.exit_code, log)
            ran = outcome is not Outcome.FAILED or RESULT_LINE.search(log) is not None
            if not ran and terminated.reason:
                detail = f"{terminated.reason}: {terminated.message or detail}"
            return ProbeResult(outcome=outcome, status=status, detail=detail,
                               exit_code=terminated.exit_code if ran else None, **where)
        waiting = next((s.state.waiting for s in statuses if s.state and s.state.waiting), None)
        if waiting is not None and waiting.reason in STUCK:
            return ProbeResult(outcome=Outcome.FAILED, detail=f"{waiting.reason} for image "
                               f"{pod.spec.containers[0].image}: {waiting.message or 'no message'}", **where)
        if time.monotonic() >= deadline:
            state = waiting.reason if waiting is not None else pod.status.phase
            return ProbeResult(outcome=Outcome.FAILED, detail=f"not finished within {timeout_s:g} s ({state})",
                               **where)
        time.sleep(POLL_S)


def remove_leftover_probes(api: client.ApiClient, namespace: str) -> list[str]:
    """Delete probe pods a crashed run left in ``namespace``; returns their names."""
    core = client.CoreV1Api(api)
    names = {item.metadata.name for listed in (core.list_namespaced_pod, core.list_namespaced_config_map)
             for item in listed(namespace, label_selector=PROBE_LABEL, _request_timeout=REQUEST_TIMEOUT_S).items}
    for name in names:
        _delete(core, namespace, name)
    return sorted(names)
