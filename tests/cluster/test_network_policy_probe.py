"""The active NetworkPolicy probe for real: the chart deployed onto the local cluster's real node, kube-router
enforcing. It passes with the chart's own policy (admitted and refused both observed), names a broad policy planted
beside it, says nothing refuses once the release's policy is gone, and leaves no probe pod behind, even when
interrupted."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
from kubernetes import client

from tests.conftest import require, running_local_cluster, skip_without_real_node
from vllm_gate.base.kube import api_client
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.checks.policy_probe import probe_network_policy
from vllm_gate.checks.probe_pod import PROBE_LABEL, Outcome, chart_template, probe_pod_manifest, run_probe
from vllm_gate.cluster.local import LocalCluster
from vllm_gate.cluster.node.images import chart_images
from vllm_gate.cluster.node.real_node import NODE_NAME
from vllm_gate.deploy.release import ensure_namespace, install_or_upgrade
from vllm_gate.deploy.rollout import RolloutTarget, wait_ready
from vllm_gate.deploy.target import in_place
from vllm_gate.deploy.values import release_fullname
from vllm_gate.spec import ModelSpec, load_spec

pytestmark = pytest.mark.real_node

NS = "policy-probe"
ROLLOUT_TIMEOUT_S = 180
GONE_TIMEOUT_S = 60
INTERRUPT_TIMEOUT_S = 60
REQUEST_S = 15
# Ingress from everywhere to the model pods: what a well-meant "allow monitoring" policy often turns out to be.
BROAD = "allow-everything"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    skip_without_real_node("no pod runs, so the active NetworkPolicy probe was")
    yield from running_local_cluster("policyprobe", data_plane=False, real_node=True)


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> client.ApiClient:
    return api_client(cluster.kubeconfig, cluster.context)


def deploy(cluster: LocalCluster, api: client.ApiClient, *sets: str) -> ModelSpec:
    """The chart for llama3 (engine: sim) installed and Ready on the real node."""
    require("helm")
    spec = load_spec("llama3", MODELS_DIR, ["engine=sim", *sets])
    core = client.CoreV1Api(api)
    created = ensure_namespace(core, spec.namespace)
    install_or_upgrade(spec, in_place(spec), cluster.kubeconfig, cluster.context, created_namespace=created)
    selector = f"app.kubernetes.io/instance={spec.name}"
    wait_ready(api, RolloutTarget(spec.namespace, release_fullname(spec.name), selector), ROLLOUT_TIMEOUT_S,
               progress=lambda _m: None)
    (pod,) = core.list_namespaced_pod(spec.namespace, label_selector=selector).items
    assert pod.spec.node_name == NODE_NAME, "the model pod is not on the real node: no container serves it"
    return spec


@pytest.fixture(scope="module")
def release(cluster: LocalCluster, api: client.ApiClient) -> ModelSpec:
    return deploy(cluster, api, f"namespace={NS}")


def probe_pods(api: client.ApiClient, namespace: str) -> list[str]:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=PROBE_LABEL, _request_timeout=REQUEST_S)
    return [p.metadata.name for p in pods.items]


def wait_no_probe_pods(api: client.ApiClient, namespace: str) -> None:
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while left := probe_pods(api, namespace):
        assert time.monotonic() < deadline, f"probe pods left in {namespace}: {left}"
        time.sleep(0.3)


@pytest.fixture
def plant(api: client.ApiClient, release: ModelSpec) -> Iterator[Callable[[dict], None]]:
    """Create NetworkPolicies in the model's namespace for one test; removed afterwards."""
    net = client.NetworkingV1Api(api)
    planted: list[str] = []

    def create(policy: dict) -> None:
        net.create_namespaced_network_policy(release.namespace, policy, _request_timeout=REQUEST_S)
        planted.append(policy["metadata"]["name"])

    yield create
    for name in planted:
        net.delete_namespaced_network_policy(name, release.namespace, _request_timeout=REQUEST_S)


def test_the_probe_passes_with_the_charts_policy_both_sides_observed(api, release):
    probe = probe_network_policy(api, release, in_place(release))
    assert probe.problems == ()
    assert probe.enforced is True
    router, other = probe.router, probe.other
    assert (router.outcome, router.status) == (Outcome.ANSWERED, 200), router.describe()
    assert other.outcome is Outcome.NO_CONNECTION, other.describe()
    assert "Failed to connect" in other.detail  # kube-router rejects: a refusal, not a timeout or a DNS failure
    assert router.node == other.node == NODE_NAME
    assert dict(release.network.router_pod_labels).items() <= router.labels.items()
    assert not set(release.network.router_pod_labels) & set(other.labels)
    assert router.namespace == other.namespace == NS  # the router's namespace: the model's own by default
    wait_no_probe_pods(api, NS)


def test_the_routers_own_replicaset_does_not_adopt_the_probe_pods(api, release):
    """The probe pods carry the router's labels: a router Deployment selecting them would adopt orphans and delete
    the surplus. Owned by their ConfigMap, they are left alone and the probe still passes."""
    router = dict(release.network.router_pod_labels)
    apps = client.AppsV1Api(api)
    apps.create_namespaced_deployment(NS, {"metadata": {"name": "router"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": router},
        "template": {"metadata": {"labels": router}, "spec": {
            "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "router", "image": chart_images()["sim"], "imagePullPolicy": "Never",
                            "args": ["--model", "router", "--port", "8000"]}]}}}})
    try:
        wait_ready(api, RolloutTarget(NS, "router", "app.kubernetes.io/name=ias-router"), ROLLOUT_TIMEOUT_S,
                   lambda _m: None)
        probe = probe_network_policy(api, release, in_place(release))
        assert probe.problems == ()
        assert (probe.router.outcome, probe.router.status) == (Outcome.ANSWERED, 200), probe.router.describe()
    finally:
        apps.delete_namespaced_deployment("router", NS)
    wait_no_probe_pods(api, NS)


def ready_endpoints(api: client.ApiClient, service: str) -> set[str]:
    """The addresses the EndpointSlices of ``service`` list as ready: where the Service sends its traffic."""
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        NS, label_selector=f"kubernetes.io/service-name={service}", _request_timeout=REQUEST_S).items
    return {address for s in slices for e in s.endpoints or [] if e.conditions and e.conditions.ready
            for address in e.addresses}


def test_a_router_service_never_lists_a_router_labelled_probe_pod(api, release):
    """The gate's probe pod, kept running (``read`` on an open stdin), beside the same pod without its readiness
    probe: a router Service selecting the router's labels lists the second as a ready endpoint, never the first."""
    router = dict(release.network.router_pod_labels)
    core = client.CoreV1Api(api)
    core.create_namespaced_service(NS, {"metadata": {"name": "router"}, "spec": {
        "selector": router, "ports": [{"port": 8000, "targetPort": 8000}]}})
    pods = {}
    for name, keep_probe in (("gate-pod", True), ("unguarded", False)):
        manifest = probe_pod_manifest(name, NS, "http://unused", labels=router, template=chart_template(release),
                                      request_timeout_s=1, retries=0, lifetime_s=120)
        (container,) = manifest["spec"]["containers"]
        container.update(command=["sh", "-c", "read -r line"], stdin=True)  # runs until deleted
        if not keep_probe:
            del container["readinessProbe"]
        core.create_namespaced_pod(NS, manifest)
        pods[name] = manifest
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + ROLLOUT_TIMEOUT_S
        ips: dict[str, str] = {}
        while len(ips) < len(pods) or ips["unguarded"] not in seen:
            assert time.monotonic() < deadline, f"the unguarded pod never became a ready endpoint: {ips}, {seen}"
            ips = {p.metadata.name: p.status.pod_ip for p in core.list_namespaced_pod(NS, label_selector=PROBE_LABEL)
                   .items if p.metadata.name in pods and p.status.phase == "Running" and p.status.pod_ip}
            seen |= ready_endpoints(api, "router")
            time.sleep(0.3)
        settle = time.monotonic() + 5  # both running, the unguarded one listed: a few seconds more for the other
        while time.monotonic() < settle:
            seen |= ready_endpoints(api, "router")
            time.sleep(0.3)
        assert ips["gate-pod"] not in seen, "the gate's router-labelled pod was a ready endpoint of the router Service"
    finally:
        for name in pods:
            core.delete_namespaced_pod(name, NS, grace_period_seconds=0)
        core.delete_namespaced_service("router", NS)
    wait_no_probe_pods(api, NS)


def test_a_broad_policy_planted_beside_the_charts_is_named(api, release, plant):
    plant({"metadata": {"name": BROAD}, "spec": {
        "podSelector": {"matchLabels": {"app.kubernetes.io/instance": release.name}},
        "policyTypes": ["Ingress"], "ingress": [{}]}})
    probe = probe_network_policy(api, release, in_place(release))
    assert probe.enforced is False
    (problem,) = probe.problems
    assert "a pod without the router's labels reached the model" in problem
    assert f"admitted by NetworkPolicy {BROAD} ingress[0] (from every source, every port)" in problem
    assert f"NetworkPolicy {release_fullname(release.name)} " not in problem  # the chart's own admits only the router


@contextmanager
def without_the_releases_policy(api: client.ApiClient, release: ModelSpec) -> Iterator[None]:
    """The chart's NetworkPolicy deleted for the block, then put back as it was."""
    net = client.NetworkingV1Api(api)
    name = release_fullname(release.name)
    saved = net.read_namespaced_network_policy(name, NS, _request_timeout=REQUEST_S)
    net.delete_namespaced_network_policy(name, NS, _request_timeout=REQUEST_S)
    try:
        yield
    finally:
        saved.metadata = client.V1ObjectMeta(name=name, labels=saved.metadata.labels,
                                             annotations=saved.metadata.annotations)
        net.create_namespaced_network_policy(NS, saved, _request_timeout=REQUEST_S)


def test_without_the_releases_policy_the_probe_says_nothing_refuses(api, release):
    with without_the_releases_policy(api, release):
        probe = probe_network_policy(api, release, in_place(release))
    assert probe.enforced is False
    (problem,) = probe.problems
    assert f"nothing refuses it: no NetworkPolicy in {NS} selects the model pods" in problem


def test_when_the_router_is_refused_too_the_probe_fails(api, release, plant):
    # Both refused is what a broken path looks like (no endpoint, an egress block): never a pass.
    with without_the_releases_policy(api, release):
        plant({"metadata": {"name": "deny-all"}, "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/instance": release.name}},
            "policyTypes": ["Ingress"], "ingress": []}})
        probe = probe_network_policy(api, release, in_place(release))
    assert probe.other.outcome is Outcome.NO_CONNECTION
    assert probe.enforced is None
    (problem,) = probe.problems
    assert problem.startswith("a pod with the router's labels {'app.kubernetes.io/name': 'ias-router'} could not "
                              f"connect to {release.in_cluster_url}/health")


def test_probe_pods_a_crashed_run_left_are_removed_first(api, release):
    core = client.CoreV1Api(api)
    # Never scheduled, as a crashed run's pod may be left in any state.
    core.create_namespaced_pod(NS, {"metadata": {"name": "vllm-gate-probe-leftover", "labels": {PROBE_LABEL: "true"}},
                                    "spec": {"nodeSelector": {"no-such-node": "x"},
                                             "containers": [{"name": "c", "image": "example.invalid/x:1"}]}},
                               _request_timeout=REQUEST_S)
    probe = probe_network_policy(api, release, in_place(release))
    assert probe.leftovers_removed == ("vllm-gate-probe-leftover",)
    assert probe.problems == ()
    wait_no_probe_pods(api, NS)


def test_an_interrupted_probe_deletes_its_pod(api, release):
    # Ctrl-C while the pod runs (curl retrying a refused port for half a minute): the pod goes all the same.
    template = chart_template(release)
    stop = threading.Event()

    def interrupt_once_running() -> None:
        deadline = time.monotonic() + INTERRUPT_TIMEOUT_S
        while not stop.is_set() and time.monotonic() < deadline:
            pods = client.CoreV1Api(api).list_namespaced_pod(NS, label_selector=PROBE_LABEL).items
            if any(p.status.phase == "Running" for p in pods):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.3)

    watcher = threading.Thread(target=interrupt_once_running, daemon=True)
    watcher.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_probe(api, NS, "http://127.0.0.1:9/", labels={}, template=template, request_timeout_s=1, retries=30)
    finally:
        stop.set()
        watcher.join(INTERRUPT_TIMEOUT_S)
    wait_no_probe_pods(api, NS)


def test_with_the_router_in_another_namespace_the_probe_runs_there(cluster, api):
    # The chart's policy then admits router-labelled pods of that namespace only; a missing namespace is said.
    sets = ("namespace=policy-probe-b", "network.router_namespace=probe-router")
    missing_spec = load_spec("llama3", MODELS_DIR, ["engine=sim", *sets])
    missing = probe_network_policy(api, missing_spec, in_place(missing_spec))
    assert missing.problems == ("the router's namespace probe-router does not exist on this cluster: no probe pod "
                                "can run where the router sits, so enforcement was not exercised",)
    assert missing.enforced is None
    client.CoreV1Api(api).create_namespace({"metadata": {"name": "probe-router"}}, _request_timeout=REQUEST_S)
    spec = deploy(cluster, api, *sets)
    probe = probe_network_policy(api, spec, in_place(spec))
    assert probe.problems == ()
    assert probe.router.namespace == probe.other.namespace == "probe-router"
    assert probe.enforced is True


def test_a_probe_pod_that_cannot_pull_its_image_fails_naming_it(api, release):
    # Where the chart's tests.image is not mirrored: the probe cannot tell, and says which image it needed.
    broken = replace(chart_template(release), image="example.invalid/curl:1")
    probe = probe_network_policy(api, release, in_place(release), broken)
    assert probe.enforced is None
    assert len(probe.problems) == 2
    assert all("example.invalid/curl:1" in p for p in probe.problems), probe.problems
    wait_no_probe_pods(api, NS)
