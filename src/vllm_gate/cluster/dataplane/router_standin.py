"""The API-router stand-in: a stand-in for the platform's router (not the router), run as a pod on the local real node.

It runs in the router's namespace with the router's labels, so the models' NetworkPolicies admit it for real, and
its Service (``router-standin``) selects exactly those labels, as the platform router's own Service would: a pod the
gate creates with them (probe, helm test, load worker) must never be one of its endpoints. It reads the enabled rows
of ``model_mappings`` through a DSN (a Secret mounted as a file, never an argument), every ``REFRESH_S``, and proxies
OpenAI-compatible requests by model name to the row's ``backend_url`` (scripts/router-standin).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping

from kubernetes import client
from kubernetes.client.rest import ApiException

from vllm_gate.base.errors import ClusterError
from vllm_gate.base.secret import Secret
from vllm_gate.cluster.node.images import ROUTER_STANDIN_IMAGE
from vllm_gate.cluster.node.real_node import NODE_NAME
from vllm_gate.deploy.rollout import RolloutTarget, wait_ready

NAME = "router-standin"
PORT = 8080
REFRESH_S = 2  # how soon a changed row is served: one refresh, plus the query
READY_TIMEOUT_S = 120.0
ROLE_LABEL = "vllm-gate/role"  # tells the stand-in's pods apart in its Deployment's selector
DSN_KEY = "dsn"

Progress = Callable[[str], None]


def runs_pods_on_real_node(core: client.CoreV1Api) -> bool:
    """Whether this cluster has the local real node, Ready (a KWOK-only cluster runs no stand-in)."""
    try:
        node = core.read_node(NODE_NAME, _request_timeout=15)
    except ApiException:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def _dsn_secret(namespace: str, dsn: Secret) -> client.V1Secret:
    return client.V1Secret(metadata=client.V1ObjectMeta(name=f"{NAME}-registry", namespace=namespace,
                                                        labels={"app.kubernetes.io/managed-by": "vllm-gate"}),
                           string_data={DSN_KEY: dsn.reveal()}, type="Opaque")


def _deployment(namespace: str, labels: Mapping[str, str], dsn_hash: str) -> client.V1Deployment:
    pod_labels = {**labels, ROLE_LABEL: NAME}
    container = client.V1Container(
        name=NAME, image=ROUTER_STANDIN_IMAGE, image_pull_policy="IfNotPresent",
        args=["--listen", f":{PORT}", "--dsn-file", f"/etc/{NAME}/{DSN_KEY}", "--refresh", f"{REFRESH_S}s"],
        ports=[client.V1ContainerPort(name="http", container_port=PORT)],
        readiness_probe=client.V1Probe(http_get=client.V1HTTPGetAction(path="/health", port=PORT),
                                       period_seconds=1, failure_threshold=2),
        volume_mounts=[client.V1VolumeMount(name="registry", mount_path=f"/etc/{NAME}", read_only=True)],
        security_context=client.V1SecurityContext(run_as_non_root=True, run_as_user=65532,
                                                  allow_privilege_escalation=False))
    template = client.V1PodTemplateSpec(
        # The DSN's hash (not the DSN): a new registry address rolls the router, the old pod serving until then.
        metadata=client.V1ObjectMeta(labels=pod_labels, annotations={"vllm-gate/registry-dsn-sha256": dsn_hash}),
        spec=client.V1PodSpec(containers=[container], node_selector={"kubernetes.io/hostname": NODE_NAME},
                              termination_grace_period_seconds=5,
                              volumes=[client.V1Volume(name="registry", secret=client.V1SecretVolumeSource(
                                  secret_name=f"{NAME}-registry", default_mode=0o444))]))
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=NAME, namespace=namespace, labels={ROLE_LABEL: NAME}),
        spec=client.V1DeploymentSpec(
            replicas=1, selector=client.V1LabelSelector(match_labels=pod_labels), template=template,
            strategy=client.V1DeploymentStrategy(type="RollingUpdate", rolling_update=client.V1RollingUpdateDeployment(
                max_surge=1, max_unavailable=0))))


def _service(namespace: str, labels: Mapping[str, str]) -> client.V1Service:
    return client.V1Service(
        metadata=client.V1ObjectMeta(name=NAME, namespace=namespace, labels={ROLE_LABEL: NAME}),
        spec=client.V1ServiceSpec(type="ClusterIP", selector=dict(labels),
                                  ports=[client.V1ServicePort(name="http", port=PORT, target_port="http")]))


def _apply(create: Callable[[], object], replace: Callable[[], object]) -> None:
    try:
        create()
    except ApiException as exc:
        if exc.status != 409:
            raise
        replace()


def deploy(api: client.ApiClient, namespace: str, labels: Mapping[str, str], dsn: Secret, progress: Progress,
           timeout_s: float = READY_TIMEOUT_S) -> None:
    """Create or update the stand-in in ``namespace`` and wait until it serves (its Service: ``NAME``:``PORT``).

    The router's ``labels`` are the spec's ``network.router_pod_labels``; its Service selects exactly them.
    """
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    dsn_hash = hashlib.sha256(dsn.reveal().encode()).hexdigest()
    secret = _dsn_secret(namespace, dsn)
    deployment, service = _deployment(namespace, labels, dsn_hash), _service(namespace, labels)
    try:
        _apply(lambda: core.create_namespaced_secret(namespace, secret, _request_timeout=15),
               lambda: core.replace_namespaced_secret(secret.metadata.name, namespace, secret, _request_timeout=15))
        _apply(lambda: apps.create_namespaced_deployment(namespace, deployment, _request_timeout=15),
               lambda: apps.replace_namespaced_deployment(NAME, namespace, deployment, _request_timeout=15))
        _apply(lambda: core.create_namespaced_service(namespace, service, _request_timeout=15),
               lambda: core.patch_namespaced_service(NAME, namespace, {"spec": {"selector": dict(labels)}},
                                                     _request_timeout=15))
    except ApiException as exc:
        raise ClusterError(f"API-router stand-in in {namespace}: HTTP {exc.status} {exc.reason}") from None
    selector = ",".join(f"{k}={v}" for k, v in {**labels, ROLE_LABEL: NAME}.items())
    wait_ready(api, RolloutTarget(namespace, NAME, selector), timeout_s, progress)
