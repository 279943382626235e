"""The model is private: ClusterIP only, no routes, no host networking, a NetworkPolicy for the router, enforced."""

from __future__ import annotations

import pytest
from kubernetes import client

from vllm_gate.checks import exposure, policy_probe, reach


@pytest.fixture(scope="module")
def core(kube_api, gate_release):
    return client.CoreV1Api(kube_api)


@pytest.fixture(scope="module")
def reaching(kube_api, core, gate_target):
    """Every Service that reaches the model's pods (by selector or EndpointSlice, any type, any labels)."""
    pods = core.list_namespaced_pod(gate_target.namespace, label_selector=gate_target.selector,
                                    _request_timeout=15).items
    assert pods, "the release has no pods"
    return reach.reaching_services(core, client.DiscoveryV1Api(kube_api), gate_target.namespace, pods)


def test_every_service_is_cluster_ip(reaching, gate_target):
    services, reached = reaching
    assert (gate_target.namespace, gate_target.service) in {(r.namespace, r.name) for r in reached}, (
        f"the release's Service {gate_target.service} does not reach its pods")
    assert reach.service_problems(services, reached) == []


def test_no_ingress_or_route_reaches_the_service(kube_api, reaching):
    assert reach.route_problems(kube_api, reaching[1]) == []


def test_no_host_network_or_host_port(core, gate_target):
    pods = core.list_namespaced_pod(gate_target.namespace, label_selector=gate_target.selector,
                                    _request_timeout=15).items
    assert pods, "the release has no pods"
    assert exposure.host_network_problems(pods) == []


def test_network_policy_admits_only_router_and_monitoring(kube_api, core, gate_spec, gate_target):
    pod = core.list_namespaced_pod(gate_target.namespace, label_selector=gate_target.selector,
                                   _request_timeout=15).items[0]
    allowed = exposure.AllowedIngress.for_spec(gate_spec, gate_target.release)
    assert exposure.network_policy_problems(kube_api, gate_spec.namespace, pod.metadata.labels, allowed) == []


def test_network_policy_is_enforced(kube_api, gate_release, gate_spec, gate_target):
    # The active probe (vllm_gate.checks.policy_probe): a pod with the router's labels reaches the model, one without is
    # refused; both run, so a probe that cannot connect at all fails too.
    if not gate_release.containers:  # the cluster's capabilities, and what the deploy actually saw
        pytest.skip("this cluster runs no containers (KWOK pods are only scheduled): no probe pod can run, so "
                    "whether the NetworkPolicy is enforced (a pod without the router's labels refused) was not "
                    "exercised")
    probe = policy_probe.probe_network_policy(kube_api, gate_spec, gate_target)
    if probe.problems:
        pytest.fail("NetworkPolicy enforcement: " + "\n".join(probe.problems), pytrace=False)
