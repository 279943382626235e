"""The local cluster's Prometheus, run as a platform runs one: a pod in the ``monitoring`` namespace with the labels
the chart's NetworkPolicy admits, finding the model pods by Kubernetes service discovery of what the chart renders
(the community chart's ``kubernetes-pods`` job: the ``prometheus.io/*`` pod annotations), and scraping them across
the pod network, where kube-router enforces that NetworkPolicy. A chart whose scrape wiring is broken, or whose
policy refuses this pod, leaves the model pods unscraped, and the monitoring suite says so.

The gate reads it through a ``kubectl port-forward``, as it would reach a platform's Prometheus from outside.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from vllm_gate.base.errors import ClusterError
from vllm_gate.base.lifecycle import Started
from vllm_gate.base.waiting import wait_until
from vllm_gate.cluster.dataplane.portforward import PortForward
from vllm_gate.cluster.dataplane.prometheus import DCGM_JOB, MODEL_JOB, SCRAPE_INTERVAL_S
from vllm_gate.cluster.node.prometheus_image import prometheus_image_name

NAME = "prometheus"
# Failing for good: no wait for these (an image the node does not hold, a container that keeps crashing).
HOPELESS = frozenset({"ErrImageNeverPull", "CrashLoopBackOff", "CreateContainerConfigError", "InvalidImageName"})
REQUEST_TIMEOUT_S = 15


@dataclass(frozen=True)
class PrometheusPods:
    """Where the platform's Prometheus runs and how its pods are labelled: what the chart's NetworkPolicy admits
    (a spec's monitoring.namespace and monitoring.prometheus_pod_labels)."""

    namespace: str = "monitoring"
    labels: tuple[tuple[str, str], ...] = (("app.kubernetes.io/name", "prometheus"),)  # kube-prometheus-stack's

    @property
    def selector(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.labels)


DEFAULT_PROMETHEUS_PODS = PrometheusPods()
PORT = 9090
CONFIG_DIR = "/etc/prometheus"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
READY_TIMEOUT_S = 90  # a locally imported image: the pod is Ready in seconds; this allows a busy machine
POLL_S = 0.5
# The recorded dcgm-exporter's series, labelled as the GPU Operator's exporter pod: Prometheus renames the pod
# labels the exporter serves to exported_* (honor_labels false, as dcgm-exporter is usually scraped).
DCGM_TARGET_LABELS = {"namespace": "gpu-operator", "pod": "nvidia-dcgm-exporter-recorded",
                      "container": "nvidia-dcgm-exporter"}

Progress = Callable[[str], None]


def model_pods_job(node: str, api_server: str) -> dict[str, Any]:
    """The community chart's ``kubernetes-pods`` job: pods annotated ``prometheus.io/scrape: "true"``, at the
    annotated port and path, labelled namespace/pod/container/node. Only pods on ``node``: the KWOK nodes' pods have
    no network to scrape.

    ``api_server`` named, with the pod's service-account token and CA as in-cluster discovery reads them: the local
    control plane advertises an address pods cannot reach (the kubernetes Service's endpoint)."""
    meta = "__meta_kubernetes_pod_"
    return {
        "job_name": MODEL_JOB,
        "honor_labels": True,
        "kubernetes_sd_configs": [{
            "role": "pod", "api_server": api_server,
            "authorization": {"credentials_file": f"{SERVICE_ACCOUNT_DIR}/token"},
            "tls_config": {"ca_file": f"{SERVICE_ACCOUNT_DIR}/ca.crt"}}],
        "relabel_configs": [
            {"source_labels": [f"{meta}annotation_prometheus_io_scrape"], "action": "keep", "regex": "true"},
            {"source_labels": [f"{meta}node_name"], "action": "keep", "regex": node},
            {"source_labels": [f"{meta}annotation_prometheus_io_scheme"], "action": "replace", "regex": "(https?)",
             "target_label": "__scheme__"},
            {"source_labels": [f"{meta}annotation_prometheus_io_path"], "action": "replace", "regex": "(.+)",
             "target_label": "__metrics_path__"},
            {"source_labels": [f"{meta}annotation_prometheus_io_port", f"{meta}ip"], "action": "replace",
             "regex": r"(\d+);((([0-9]+?)(\.|$)){4})", "replacement": "$2:$1", "target_label": "__address__"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": [f"{meta}name"], "target_label": "pod"},
            {"source_labels": [f"{meta}container_name"], "target_label": "container"},
            {"source_labels": [f"{meta}node_name"], "target_label": "node"},
            {"source_labels": [f"{meta}phase"], "action": "drop", "regex": "Pending|Succeeded|Failed|Completed"},
        ],
    }


def prometheus_config(node: str, api_server: str, dcgm_address: str) -> str:
    interval = f"{SCRAPE_INTERVAL_S}s"
    config = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": [
            model_pods_job(node, api_server),
            {"job_name": DCGM_JOB, "honor_labels": False,
             "static_configs": [{"targets": [dcgm_address], "labels": DCGM_TARGET_LABELS}]},
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def _objects(image: str, config: str, node: str, pods: PrometheusPods) -> list[dict[str, Any]]:
    labels = dict(pods.labels)
    meta = {"name": NAME, "namespace": pods.namespace, "labels": labels}
    cluster_name = f"{pods.namespace}-{NAME}"
    container = {
        "name": NAME, "image": image, "imagePullPolicy": "Never",
        "args": [f"--config.file={CONFIG_DIR}/prometheus.yml", "--storage.tsdb.path=/prometheus",
                 f"--web.listen-address=:{PORT}", "--storage.tsdb.retention.time=1d", "--log.level=warn"],
        "ports": [{"name": "web", "containerPort": PORT}],
        "readinessProbe": {"httpGet": {"path": "/-/ready", "port": "web"}, "periodSeconds": 1},
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR}, {"name": "data", "mountPath": "/prometheus"}],
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
    }
    pod_spec = {
        "serviceAccountName": NAME,
        "nodeSelector": {"kubernetes.io/hostname": node},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "fsGroup": 65534},
        # No resource requests: the pool's free CPU and memory stay what preflight and the tests count.
        "containers": [container],
        "volumes": [{"name": "config", "configMap": {"name": NAME}}, {"name": "data", "emptyDir": {}}],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": cluster_name, "labels": labels},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": cluster_name, "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": pods.namespace}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"prometheus.yml": config}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": pod_spec}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta,
         "spec": {"selector": labels, "ports": [{"name": "web", "port": PORT, "targetPort": "web"}]}},
    ]


def _create(api: client.ApiClient, body: dict[str, Any]) -> None:
    kind = body["kind"]
    name, namespace = body["metadata"]["name"], body["metadata"].get("namespace")
    timeout = {"_request_timeout": REQUEST_TIMEOUT_S}
    core, rbac, apps = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api), client.AppsV1Api(api)
    create = {
        "ServiceAccount": lambda: core.create_namespaced_service_account(namespace, body, **timeout),
        "ClusterRole": lambda: rbac.create_cluster_role(body, **timeout),
        "ClusterRoleBinding": lambda: rbac.create_cluster_role_binding(body, **timeout),
        "ConfigMap": lambda: core.create_namespaced_config_map(namespace, body, **timeout),
        "Deployment": lambda: apps.create_namespaced_deployment(namespace, body, **timeout),
        "Service": lambda: core.create_namespaced_service(namespace, body, **timeout),
    }[kind]
    try:
        create()
    except ApiException as exc:
        raise ClusterError(f"cluster Prometheus: creating {kind} {name} failed: HTTP {exc.status} {exc.reason}") \
            from None


class ClusterPrometheus(Started):
    """The Prometheus pod, its RBAC, configuration and Service, and the port-forward the gate reads it through."""

    def __init__(self, api: client.ApiClient, *, node: str, api_server: str, dcgm_address: str,
                 pods: PrometheusPods, kubeconfig: Path | None, context: str | None, progress: Progress) -> None:
        """``api_server``: the API server's URL as pods reach it; ``dcgm_address``: the recorded dcgm-exporter's;
        ``pods``: where the Prometheus pod runs and its labels."""
        self._api = api
        self._pods = pods
        self._node = node
        self._api_server = api_server
        self._dcgm_address = dcgm_address
        self._kubeconfig, self._context = kubeconfig, context
        self._progress = progress
        self._forward: PortForward | None = None

    @property
    def url(self) -> str:
        if self._forward is None:
            raise ClusterError("cluster Prometheus: not started")
        return self._forward.url

    def start(self) -> ClusterPrometheus:
        core = client.CoreV1Api(self._api)
        namespace = self._pods.namespace
        try:
            core.create_namespace({"metadata": {"name": namespace}}, _request_timeout=REQUEST_TIMEOUT_S)
        except ApiException as exc:
            if exc.status != 409:  # a namespace the cluster already has is fine
                raise ClusterError(f"cluster Prometheus: creating namespace {namespace} failed: HTTP {exc.status} "
                                   f"{exc.reason}") from None
        config = prometheus_config(self._node, self._api_server, self._dcgm_address)
        for body in _objects(prometheus_image_name(), config, self._node, self._pods):
            _create(self._api, body)
        self._wait_ready(core)
        self._forward = PortForward(namespace, f"svc/{NAME}", PORT, kubeconfig=self._kubeconfig,
                                    context=self._context, progress=self._progress)
        self._forward.start()
        self._wait_answering()
        return self

    def _wait(self, what: str, state: Callable[[], str | None]) -> None:
        """Poll ``state`` (None: done; else what it is waiting on; ClusterError: it never will be) up to
        READY_TIMEOUT_S, saying so every 10 s."""
        waiting = wait_until(state, READY_TIMEOUT_S, lambda on, elapsed: self._progress(
            f"local cluster: waiting for {what} ({on}), {elapsed:.0f}/{READY_TIMEOUT_S} s"), poll_s=POLL_S)
        if waiting is not None:
            raise ClusterError(f"cluster Prometheus: {what}: not within {READY_TIMEOUT_S} s ({waiting})")

    def _wait_ready(self, core: client.CoreV1Api) -> None:
        namespace = self._pods.namespace

        def state() -> str | None:
            pods = core.list_namespaced_pod(namespace, label_selector=self._pods.selector,
                                            _request_timeout=REQUEST_TIMEOUT_S).items
            if any(c.type == "Ready" and c.status == "True" for p in pods for c in p.status.conditions or []):
                return None
            described = "; ".join(_pod_state(core, p) for p in pods) or "no pod yet"
            if any(_waiting_reasons(p) & HOPELESS for p in pods):
                raise ClusterError(f"cluster Prometheus: its pod in {namespace} will not start ({described})")
            return described
        self._wait(f"its Prometheus pod in {namespace} to be Ready", state)

    def _wait_answering(self) -> None:
        def state() -> str | None:
            try:
                status = httpx.get(f"{self.url}/-/ready", timeout=2).status_code
            except httpx.TransportError as exc:
                return type(exc).__name__
            return None if status == 200 else f"HTTP {status}"
        self._wait(f"its Prometheus to answer through port-forward {self.url}", state)

    def stop(self) -> None:
        """Close the port-forward; the pod goes with the cluster."""
        if self._forward is not None:
            self._forward.stop()
            self._forward = None


def _waiting_reasons(pod: client.V1Pod) -> set[str]:
    return {s.state.waiting.reason for s in pod.status.container_statuses or []
            if s.state and s.state.waiting and s.state.waiting.reason}


def _pod_state(core: client.CoreV1Api, pod: client.V1Pod) -> str:
    """Its phase, why a container waits, and the last line a crashed one wrote."""
    statuses = pod.status.container_statuses or []
    waiting = sorted(_waiting_reasons(pod))
    said = ""
    if any(s.last_state and s.last_state.terminated for s in statuses):
        try:
            log = core.read_namespaced_pod_log(pod.metadata.name, pod.metadata.namespace, previous=True,
                                               tail_lines=3, _request_timeout=10)
            said = f"; it last wrote: {' | '.join(line.strip() for line in log.splitlines() if line.strip())[-400:]}"
        except ApiException as exc:
            said = f"; its log unreadable: HTTP {exc.status}"
    return f"{pod.metadata.name}: {pod.status.phase}" + (f" ({', '.join(waiting)})" if waiting else "") + said
