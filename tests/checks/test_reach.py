"""What reaches the model's pods, planted in a real API server: each way in fails the exposure suite's checks naming
the object; the model's own ClusterIP Service, and objects that reach something else, do not.

The Gateway API and Istio kinds are stand-in CustomResourceDefinitions (their group, versions, kind and plural;
the schemas are not vendored here), so the API server serves and lists them as a cluster with them installed would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import running_local_cluster
from vllm_gate.base.kube import api_client
from vllm_gate.checks import reach
from vllm_gate.cluster.local import LocalCluster

NS, OTHER = "models", "edge"
POD_LABELS = {"app.kubernetes.io/instance": "llama3-abc123", "app.kubernetes.io/component": "serving-engine"}
SERVICE = "llama-3-8b-inference-abc123"
ESTABLISHED_TIMEOUT_S = 30
KINDS = (("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
         ("gateway.networking.k8s.io", "v1", "GRPCRoute", "grpcroutes"),
         ("networking.istio.io", "v1", "VirtualService", "virtualservices"))


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    yield from running_local_cluster("reach", data_plane=False)


def _crd(group: str, version: str, kind: str, plural: str) -> dict[str, Any]:
    # A *.k8s.io group is protected: the Gateway API's own CRDs carry this approval annotation.
    approved = ({"api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/2466"}
                if group.endswith(".k8s.io") else {})
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}", "annotations": approved},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                     "versions": [{"name": version, "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> client.ApiClient:
    """The cluster with the two namespaces, the model's own Service, and the route kinds served."""
    api = api_client(cluster.kubeconfig, cluster.context)
    core, extensions = client.CoreV1Api(api), client.ApiextensionsV1Api(api)
    for ns in (NS, OTHER):
        core.create_namespace({"metadata": {"name": ns}}, _request_timeout=15)
    _service(core, NS, SERVICE, POD_LABELS, labels={"app.kubernetes.io/instance": "llama3-abc123"})
    for group, version, kind, plural in KINDS:
        extensions.create_custom_resource_definition(_crd(group, version, kind, plural), _request_timeout=15)
    deadline = time.monotonic() + ESTABLISHED_TIMEOUT_S
    for _group, _version, _kind, plural in KINDS:
        name = f"{plural}.{_group}"
        while not any(c.type == "Established" and c.status == "True" for c in
                      extensions.read_custom_resource_definition(name, _request_timeout=15).status.conditions or []):
            assert time.monotonic() < deadline, f"CRD {name} not Established within {ESTABLISHED_TIMEOUT_S} s"
            time.sleep(0.5)
    return api


def _service(core: client.CoreV1Api, ns: str, name: str, selector: dict[str, str] | None, *, kind: str = "ClusterIP",
             labels: dict[str, str] | None = None, external_name: str | None = None) -> None:
    spec: dict[str, Any] = {"type": kind}
    if kind == "ExternalName":
        spec["externalName"] = external_name
    else:
        spec["ports"] = [{"port": 8000, "targetPort": 8000}]
        if selector:
            spec["selector"] = selector
    core.create_namespaced_service(ns, {"metadata": {"name": name, "labels": labels or {}}, "spec": spec},
                                   _request_timeout=15)


def _pods() -> list[client.V1Pod]:
    """The model's pods as the check reads them: names and labels (no kubelet needed to judge reach)."""
    return [client.V1Pod(metadata=client.V1ObjectMeta(name="llama3-abc123-vllm-0", namespace=NS, labels=POD_LABELS))]


def _judge(api: client.ApiClient) -> tuple[list[str], list[str]]:
    services, reached = reach.reaching_services(client.CoreV1Api(api), client.DiscoveryV1Api(api), NS, _pods())
    return reach.service_problems(services, reached), reach.route_problems(api, reached)


def _create(api: client.ApiClient, group: str, version: str, plural: str, ns: str, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(group, version, ns, plural, body,
                                                                 _request_timeout=15)


def _delete(api: client.ApiClient, group: str, version: str, plural: str, ns: str, name: str) -> None:
    client.CustomObjectsApi(api).delete_namespaced_custom_object(group, version, ns, plural, name,
                                                                 _request_timeout=15)


def test_the_model_s_own_clusterip_service_passes(api: client.ApiClient):
    assert _judge(api) == ([], [])


def test_an_unlabelled_nodeport_selecting_the_pods_fails_naming_it(api: client.ApiClient):
    core = client.CoreV1Api(api)
    _service(core, NS, "debug-np", {"app.kubernetes.io/instance": "llama3-abc123"}, kind="NodePort")
    _service(core, NS, "unrelated-np", {"app": "something-else"}, kind="NodePort")  # selects no model pod
    try:
        services, routes = _judge(api)
        assert len(services) == 1
        assert services[0].startswith(f"Service {NS}/debug-np (selects the pods) is NodePort")
        assert routes == []
    finally:
        for name in ("debug-np", "unrelated-np"):
            core.delete_namespaced_service(name, NS, _request_timeout=15)


def test_a_selectorless_service_with_an_endpointslice_to_the_pods_fails_naming_it(api: client.ApiClient):
    core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    _service(core, OTHER, "manual", None, kind="LoadBalancer")
    discovery.create_namespaced_endpoint_slice(OTHER, {
        "metadata": {"name": "manual-1", "labels": {"kubernetes.io/service-name": "manual"}},
        "addressType": "IPv4", "ports": [{"port": 8000}],
        "endpoints": [{"addresses": ["10.250.1.9"],
                       "targetRef": {"kind": "Pod", "namespace": NS, "name": "llama3-abc123-vllm-0"}}]},
        _request_timeout=15)
    try:
        services, _routes = _judge(api)
        assert services == [f"Service {OTHER}/manual (its EndpointSlice targets the pods) is LoadBalancer"]
    finally:
        discovery.delete_namespaced_endpoint_slice("manual-1", OTHER, _request_timeout=15)
        core.delete_namespaced_service("manual", OTHER, _request_timeout=15)


def _route(kind: str, name: str, ns: str, backend_ns: str | None, backend: str = SERVICE) -> dict[str, Any]:
    ref = {"name": backend, "port": 8000, **({"namespace": backend_ns} if backend_ns else {})}
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": kind, "metadata": {"name": name},
            "spec": {"parentRefs": [{"name": "public"}], "rules": [{"backendRefs": [ref]}]}}


@pytest.mark.parametrize(("kind", "plural"), [("HTTPRoute", "httproutes"), ("GRPCRoute", "grpcroutes")])
def test_a_gateway_route_in_another_namespace_fails_naming_it(api: client.ApiClient, kind: str, plural: str):
    group = "gateway.networking.k8s.io"
    _create(api, group, "v1", plural, OTHER, _route(kind, "to-model", OTHER, NS))
    _create(api, group, "v1", plural, OTHER, _route(kind, "to-other", OTHER, None))  # its own namespace's Service
    try:
        assert _judge(api)[1] == [f"{kind} {OTHER}/to-model routes to Service {NS}/{SERVICE}"]
    finally:
        for name in ("to-model", "to-other"):
            _delete(api, group, "v1", plural, OTHER, name)


def test_an_ingress_through_an_externalname_alias_and_a_virtualservice_fail_naming_them(api: client.ApiClient):
    core, networking = client.CoreV1Api(api), client.NetworkingV1Api(api)
    _service(core, OTHER, "alias", None, kind="ExternalName",
             external_name=f"{SERVICE}.{NS}.svc.cluster.local")
    networking.create_namespaced_ingress(OTHER, {
        "metadata": {"name": "public"},
        "spec": {"defaultBackend": {"service": {"name": "alias", "port": {"number": 8000}}}}}, _request_timeout=15)
    _create(api, "networking.istio.io", "v1", "virtualservices", OTHER, {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "mesh"},
        "spec": {"hosts": ["llm.example.com"], "http": [{"route": [{"destination": {"host": f"{SERVICE}.{NS}"}}]}]}})
    try:
        _services, routes = _judge(api)
        assert routes == [f"Ingress {OTHER}/public routes to Service {OTHER}/alias",
                          f"VirtualService {OTHER}/mesh routes to Service {NS}/{SERVICE}"]
    finally:
        networking.delete_namespaced_ingress("public", OTHER, _request_timeout=15)
        core.delete_namespaced_service("alias", OTHER, _request_timeout=15)
        _delete(api, "networking.istio.io", "v1", "virtualservices", OTHER, "mesh")
