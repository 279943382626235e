"""Does a registry backend URL reach the model? The Service it names, its port, and its ready endpoints."""

from __future__ import annotations

from urllib.parse import urlsplit

from kubernetes import client
from kubernetes.client.rest import ApiException

CLUSTER_SUFFIXES = (".svc.cluster.local", ".svc")


def service_of(url: str) -> tuple[str, str, int] | None:
    """(namespace, service, port) of an in-cluster URL such as http://svc.ns.svc.cluster.local:8000."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    suffix = next((s for s in CLUSTER_SUFFIXES if host.endswith(s)), None)
    if suffix is None or parts.port is None:
        return None
    labels = host.removesuffix(suffix).split(".")
    if len(labels) != 2:  # service.namespace
        return None
    return labels[1], labels[0], parts.port


def backend_problems(api: client.ApiClient, url: str, pod_labels: dict[str, str]) -> list[str]:
    """Everything that keeps ``url`` from reaching the pods labelled ``pod_labels``; empty when it does."""
    found = service_of(url)
    if found is None:
        return [f"{url} does not name an in-cluster Service (http://SERVICE.NAMESPACE.svc.cluster.local:PORT)"]
    namespace, name, port = found
    core = client.CoreV1Api(api)
    try:
        svc = core.read_namespaced_service(name, namespace, _request_timeout=15)
    except ApiException as exc:
        if exc.status == 404:
            return [f"{url}: no Service {namespace}/{name} in the cluster"]
        raise
    problems = []
    ports = [p.port for p in svc.spec.ports or []]
    if port not in ports:
        problems.append(f"{url}: Service {namespace}/{name} serves ports {ports}, not {port}")
    selector = svc.spec.selector or {}
    if not selector or any(pod_labels.get(k) != v for k, v in selector.items()):
        problems.append(f"{url}: Service {namespace}/{name} selects {selector}, not the model's pods")
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={name}", _request_timeout=15).items
    ready = [e for s in slices for e in s.endpoints or [] if e.conditions and e.conditions.ready]
    if not ready:
        problems.append(f"{url}: Service {namespace}/{name} has no ready endpoint")
    return problems
