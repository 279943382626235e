"""Is the model private? Services, routes, host networking and the NetworkPolicy of a live release."""

from __future__ import annotations

from kubernetes import client
from kubernetes.client.rest import ApiException

ROUTE_APIS = (("gateway.networking.k8s.io", "v1", "httproutes"), ("route.openshift.io", "v1", "routes"))


def service_problems(core: client.CoreV1Api, namespace: str, instance: str) -> list[str]:
    """Every way a Service of the release is reachable from outside the cluster."""
    problems = []
    services = core.list_namespaced_service(namespace, label_selector=f"app.kubernetes.io/instance={instance}",
                                            _request_timeout=15).items
    if not services:
        problems.append(f"no Service labelled app.kubernetes.io/instance={instance} in {namespace}")
    for svc in services:
        name, spec = svc.metadata.name, svc.spec
        if spec.type != "ClusterIP":
            problems.append(f"Service {name} is {spec.type}")
        if spec.external_ips:
            problems.append(f"Service {name} has externalIPs {spec.external_ips}")
        problems += [f"Service {name} port {p.port} has nodePort {p.node_port}" for p in spec.ports if p.node_port]
    return problems


def route_problems(api: client.ApiClient, namespace: str, service: str) -> list[str]:
    """Ingresses, HTTPRoutes or OpenShift Routes in the namespace that point at the model's Service."""
    problems = []
    for ing in client.NetworkingV1Api(api).list_namespaced_ingress(namespace, _request_timeout=15).items:
        backends = [p.backend.service.name for r in ing.spec.rules or [] for p in (r.http.paths if r.http else [])
                    if p.backend and p.backend.service]
        default = ing.spec.default_backend
        if service in backends or (default and default.service and default.service.name == service):
            problems.append(f"Ingress {ing.metadata.name} routes to Service {service}")
    custom = client.CustomObjectsApi(api)
    for group, version, plural in ROUTE_APIS:
        try:
            found = custom.list_namespaced_custom_object(group, version, namespace, plural, _request_timeout=15)
            items = found["items"]
        except ApiException as exc:
            if exc.status == 404:  # the API is not installed in this cluster
                continue
            raise
        for item in items:
            if service in str(item.get("spec", {})):
                problems.append(f"{item['kind']} {item['metadata']['name']} routes to Service {service}")
    return problems


def host_network_problems(pods: list[client.V1Pod]) -> list[str]:
    problems = []
    for pod in pods:
        if pod.spec.host_network:
            problems.append(f"pod {pod.metadata.name} uses hostNetwork")
        problems += [f"pod {pod.metadata.name} container {c.name} has hostPort {p.host_port}"
                     for c in pod.spec.containers for p in c.ports or [] if p.host_port]
    return problems


def _selects(selector: client.V1LabelSelector | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    if selector.match_expressions:
        return False  # not used by our chart; treat as not matching rather than guess
    return all(labels.get(k) == v for k, v in (selector.match_labels or {}).items())


def network_policy_problems(api: client.ApiClient, namespace: str, pod_labels: dict[str, str],
                            router_labels: dict[str, str], monitoring_namespace: str) -> list[str]:
    """The pods must be selected by a policy that admits only the router and the monitoring namespace."""
    policies = client.NetworkingV1Api(api).list_namespaced_network_policy(namespace, _request_timeout=15).items
    selecting = [p for p in policies if _selects(p.spec.pod_selector, pod_labels)
                 and "Ingress" in (p.spec.policy_types or ["Ingress"])]
    if not selecting:
        return [f"no NetworkPolicy in {namespace} selects the model pods {pod_labels}"]
    problems = []
    for policy in selecting:
        for rule in policy.spec.ingress or []:
            if not rule.var_from:
                problems.append(f"NetworkPolicy {policy.metadata.name} admits traffic from anywhere")
            for peer in rule.var_from or []:
                if peer.ip_block is not None:
                    problems.append(f"NetworkPolicy {policy.metadata.name} admits ipBlock {peer.ip_block.cidr}")
                    continue
                router = peer.pod_selector is not None and _selects(peer.pod_selector, router_labels) and \
                    peer.pod_selector.match_labels
                monitoring = (peer.pod_selector is None and peer.namespace_selector is not None and
                              (peer.namespace_selector.match_labels or {}) ==
                              {"kubernetes.io/metadata.name": monitoring_namespace})
                if not (router or monitoring):
                    problems.append(f"NetworkPolicy {policy.metadata.name} admits a peer that is neither the "
                                    f"router nor namespace {monitoring_namespace}: {peer.to_dict()}")
    return problems
