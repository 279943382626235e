"""What reaches the model's pods, found by reach rather than by label: every Service whose selector (or whose
EndpointSlices) take in the pods, whatever its type and labels, and every entry point the cluster serves whose
backends resolve to one of them, in any namespace: Ingress, the Gateway API's routes, Istio VirtualServices and
OpenShift Routes.

Checked (README, "Exposure"): Services in the pods' namespace by selector; Services anywhere by EndpointSlices that
target the pods; ExternalName Services anywhere that alias one of those; Ingress (networking.k8s.io/v1) rules and
default backends; HTTPRoute, GRPCRoute, TLSRoute, TCPRoute, UDPRoute (gateway.networking.k8s.io v1, v1beta1,
v1alpha2: whichever the cluster serves) backendRefs, with their namespace; Istio VirtualService destinations
(networking.istio.io v1, v1beta1) by host; OpenShift Route (route.openshift.io/v1) targets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from vllm_gate.base.errors import GateError

REQUEST_TIMEOUT_S = 15
CLUSTER_DOMAIN = "cluster.local"
# Gateway API route kinds and the versions they have been served under, newest first.
GATEWAY_ROUTES = (("httproutes", ("v1", "v1beta1")), ("grpcroutes", ("v1", "v1alpha2")),
                  ("tlsroutes", ("v1alpha3", "v1alpha2")), ("tcproutes", ("v1alpha2",)), ("udproutes", ("v1alpha2",)))
GATEWAY_GROUP = "gateway.networking.k8s.io"
ISTIO = ("networking.istio.io", ("v1", "v1beta1"), "virtualservices")
OPENSHIFT = ("route.openshift.io", ("v1",), "routes")
EXPOSED_TYPES = ("NodePort", "LoadBalancer")


@dataclass(frozen=True)
class Reached:
    """A Service that takes in the model's pods: ``(namespace, name)`` and how it was found."""

    namespace: str
    name: str
    how: str  # "selects the pods", "EndpointSlice targets the pods", "aliases Service x/y"


def _refused(what: str, exc: ApiException) -> GateError:
    return GateError(f"cannot list {what} in every namespace (HTTP {exc.status} {exc.reason}): the gate needs get and "
                     "list on them cluster-wide to see what reaches the model")


def _selects(selector: Mapping[str, str] | None, labels: Sequence[Mapping[str, str]]) -> bool:
    """A Service selector (equality only) takes a pod in when every pair is among the pod's labels."""
    return bool(selector) and any(all(pod.get(k) == v for k, v in selector.items()) for pod in labels)


def reaching_services(core: client.CoreV1Api, discovery: client.DiscoveryV1Api, namespace: str,
                      pods: Sequence[client.V1Pod]) -> tuple[list[client.V1Service], list[Reached]]:
    """Every Service that reaches the pods, with the objects (to judge their type) and how each was found."""
    labels = [pod.metadata.labels or {} for pod in pods]
    names = {pod.metadata.name for pod in pods}
    try:
        services = {(s.metadata.namespace, s.metadata.name): s for s in
                    core.list_service_for_all_namespaces(_request_timeout=REQUEST_TIMEOUT_S).items}
        slices = discovery.list_endpoint_slice_for_all_namespaces(_request_timeout=REQUEST_TIMEOUT_S).items
    except ApiException as exc:
        raise _refused("Services and EndpointSlices", exc) from None
    reached: dict[tuple[str, str], Reached] = {}
    for (ns, name), svc in services.items():
        if ns == namespace and _selects(svc.spec.selector, labels):
            reached[(ns, name)] = Reached(ns, name, "selects the pods")
    for slice_ in slices:
        owner = (slice_.metadata.labels or {}).get("kubernetes.io/service-name")
        targets = {(e.target_ref.namespace or slice_.metadata.namespace, e.target_ref.name)
                   for e in slice_.endpoints or [] if e.target_ref is not None and e.target_ref.kind == "Pod"}
        if owner and any(ns == namespace and pod in names for ns, pod in targets):
            key = (slice_.metadata.namespace, owner)
            reached.setdefault(key, Reached(*key, "its EndpointSlice targets the pods"))
    hosts = {host: key for key in reached for host in _dns_names(*key)}
    for (ns, name), svc in services.items():
        target = (svc.spec.external_name or "").rstrip(".") if svc.spec.type == "ExternalName" else ""
        if target in hosts:
            reached.setdefault((ns, name), Reached(ns, name, f"aliases Service {'/'.join(hosts[target])}"))
    found = [reached[key] for key in sorted(reached)]
    return [services[(r.namespace, r.name)] for r in found if (r.namespace, r.name) in services], found


def _dns_names(namespace: str, name: str) -> list[str]:
    return [f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}"]


def service_problems(services: Iterable[client.V1Service], reached: Sequence[Reached]) -> list[str]:
    """Every reaching Service that is reachable from outside the cluster, named with how it reaches the pods."""
    how = {(r.namespace, r.name): r.how for r in reached}
    problems: list[str] = []
    for svc in services:
        ns, name, spec = svc.metadata.namespace, svc.metadata.name, svc.spec
        what = f"Service {ns}/{name} ({how[(ns, name)]})"
        if spec.type in EXPOSED_TYPES:
            problems.append(f"{what} is {spec.type}")
        if spec.external_ips:
            problems.append(f"{what} has externalIPs {spec.external_ips}")
        problems += [f"{what} port {p.port} has nodePort {p.node_port}" for p in spec.ports or []
                     if p.node_port and spec.type not in EXPOSED_TYPES]
    return problems


def _list_all(custom: client.CustomObjectsApi, group: str, versions: Sequence[str],
              plural: str) -> list[dict[str, Any]]:
    """Every object of the kind, cluster-wide, from the newest version the cluster serves; none where it serves none."""
    for version in versions:
        try:
            return list(custom.list_cluster_custom_object(group, version, plural,
                                                          _request_timeout=REQUEST_TIMEOUT_S)["items"])
        except ApiException as exc:
            if exc.status == 404:  # this version (or the whole API) is not served here
                continue
            raise _refused(f"{plural}.{group}", exc) from None
    return []


def _name(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return meta.get("namespace", ""), meta.get("name", "")


def route_problems(api: client.ApiClient, reached: Sequence[Reached]) -> list[str]:
    """Every Ingress, Gateway API route, VirtualService or OpenShift Route, in any namespace, whose backends resolve
    to a Service that reaches the model's pods."""
    targets = {(r.namespace, r.name) for r in reached}
    problems: list[str] = []
    try:
        ingresses = client.NetworkingV1Api(api).list_ingress_for_all_namespaces(_request_timeout=REQUEST_TIMEOUT_S)
    except ApiException as exc:
        raise _refused("Ingresses", exc) from None
    for ing in ingresses.items:
        ns = ing.metadata.namespace
        backends = [p.backend.service.name for r in ing.spec.rules or [] for p in (r.http.paths if r.http else [])
                    if p.backend and p.backend.service]
        default = ing.spec.default_backend
        if default and default.service:
            backends.append(default.service.name)
        problems += [f"Ingress {ns}/{ing.metadata.name} routes to Service {ns}/{b}" for b in sorted(set(backends))
                     if (ns, b) in targets]
    custom = client.CustomObjectsApi(api)
    for plural, versions in GATEWAY_ROUTES:
        for route in _list_all(custom, GATEWAY_GROUP, versions, plural):
            ns, name = _name(route)
            refs = [ref for rule in route.get("spec", {}).get("rules") or [] for ref in rule.get("backendRefs") or []
                    if ref.get("kind", "Service") == "Service" and ref.get("group", "") in ("", "core")]
            hit = sorted({(ref.get("namespace") or ns, ref.get("name", "")) for ref in refs} & targets)
            problems += [f"{route.get('kind', plural)} {ns}/{name} routes to Service {t_ns}/{t_name}"
                         for t_ns, t_name in hit]
    group, versions, plural = ISTIO
    for service in _list_all(custom, group, versions, plural):
        ns, name = _name(service)
        spec = service.get("spec", {})
        hosts = {route.get("destination", {}).get("host", "") for section in ("http", "tcp", "tls")
                 for rule in spec.get(section) or [] for route in rule.get("route") or []}
        hit = sorted(t for t in targets if any(_resolves(host, ns, *t) for host in hosts))
        problems += [f"VirtualService {ns}/{name} routes to Service {t_ns}/{t_name}" for t_ns, t_name in hit]
    group, versions, plural = OPENSHIFT
    for route in _list_all(custom, group, versions, plural):
        ns, name = _name(route)
        spec = route.get("spec", {})
        backends = {b.get("name", "") for b in [spec.get("to") or {}, *(spec.get("alternateBackends") or [])]
                    if b.get("kind", "Service") == "Service"}
        problems += [f"Route {ns}/{name} routes to Service {ns}/{b}" for b in sorted(backends) if (ns, b) in targets]
    return problems


def _resolves(host: str, from_namespace: str, namespace: str, name: str) -> bool:
    """Whether an Istio host names the Service: its short name in the same namespace, or a qualified name."""
    host = host.rstrip(".")
    return (host == name and from_namespace == namespace) or host in _dns_names(namespace, name)
