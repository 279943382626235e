"""The NetworkPolicy check on a real API server: the chart's own policy passes, every broader one is named."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import require, running_local_cluster
from vllm_gate.base.kube import api_client
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.checks.exposure import HELM_TEST_LABEL, AllowedIngress, label_selector_matches, network_policy_problems
from vllm_gate.cluster.local import LocalCluster
from vllm_gate.deploy.render import render_manifests
from vllm_gate.deploy.values import release_fullname
from vllm_gate.spec import ModelSpec, load_spec

# Two router labels, so that a peer with only one of them (a subset: more pods) can be planted.
ROUTER = {"app.kubernetes.io/name": "ias-router", "app.kubernetes.io/component": "gateway"}
ROUTER_SET = f"network.router_pod_labels={json.dumps(ROUTER)}"
CHART_POLICY = release_fullname("llama3")
HTTP = [{"port": "http", "protocol": "TCP"}]
NO_ROUTER = " admits the router "  # no rule lets the router reach the serving port
NO_PROMETHEUS = " admits the Prometheus pods "  # no rule lets Prometheus reach the serving port
MONITORING_RULE = 1  # the chart's ingress[0] admits the router, [1] the Prometheus pods
MONITORING_NS = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
PROMETHEUS_PEER = ("podSelector {app.kubernetes.io/name=prometheus} "
                   "namespaceSelector {kubernetes.io/metadata.name=monitoring}")

_namespaces = itertools.count()

Policy = dict[str, Any]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    yield from running_local_cluster("netpol", data_plane=False)


@pytest.fixture(scope="module")
def api(cluster: LocalCluster) -> client.ApiClient:
    return api_client(cluster.kubeconfig, cluster.context)


@pytest.fixture
def namespace(api: client.ApiClient) -> str:
    """A fresh namespace per test, so planted policies never meet (the cluster goes at the module's end)."""
    name = f"np-{next(_namespaces)}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}}, _request_timeout=15)
    return name


def model(*sets: str) -> ModelSpec:
    return load_spec("llama3", MODELS_DIR, [ROUTER_SET, *sets])


def rendered(spec: ModelSpec) -> tuple[Policy, dict[str, str]]:
    """The chart's NetworkPolicy for ``spec`` (rendered by helm) and the labels of the model pods."""
    docs = render_manifests(spec)
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    policy["metadata"].pop("namespace", None)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    return policy, deployment["spec"]["template"]["metadata"]["labels"]


@pytest.fixture(scope="module")
def chart() -> tuple[Policy, dict[str, str]]:
    require("helm")
    return rendered(model())


@pytest.fixture
def chart_policy(chart: tuple[Policy, dict[str, str]]) -> Policy:
    return copy.deepcopy(chart[0])


@pytest.fixture(scope="module")
def pod_labels(chart: tuple[Policy, dict[str, str]]) -> dict[str, str]:
    return chart[1]


@pytest.fixture(scope="module")
def allowed() -> AllowedIngress:
    return AllowedIngress.for_spec(model())


def create(api: client.ApiClient, namespace: str, *policies: Policy) -> None:
    for policy in policies:
        client.NetworkingV1Api(api).create_namespaced_network_policy(namespace, policy, _request_timeout=15)


def policy(name: str, pod_selector: dict[str, Any], ingress: list[dict[str, Any]],
           types: list[str] | None = None) -> Policy:
    spec: dict[str, Any] = {"podSelector": pod_selector, "ingress": ingress}
    if types is not None:
        spec["policyTypes"] = types
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name}, "spec": spec}


def assert_named(problems: list[str], expected: list[str]) -> None:
    """Each expected cause is named by exactly one problem, and there is no other problem."""
    for cause in expected:
        assert len([p for p in problems if cause in p]) == 1, f"{cause!r} not named once in {problems}"
    assert len(problems) == len(expected), problems


def test_the_charts_own_policy_passes(api, namespace, chart_policy, pod_labels, allowed):
    create(api, namespace, chart_policy)
    assert network_policy_problems(api, namespace, pod_labels, allowed) == []


def test_no_policy_selecting_the_pods_leaves_them_open(api, namespace, pod_labels, allowed):
    create(api, namespace,
           policy("other-pods", {"matchLabels": {"app": "other"}}, [{}]),
           policy("egress-only", {}, [], types=["Egress"]),
           policy("not-in", {"matchExpressions": [
               {"key": "app.kubernetes.io/instance", "operator": "NotIn", "values": ["llama3"]}]}, [{}]))
    problems = network_policy_problems(api, namespace, pod_labels, allowed)
    assert len(problems) == 1
    assert problems[0].startswith(f"no NetworkPolicy in {namespace} selects the model pods")


def _ingress(index: int, edit: Callable[[dict[str, Any]], None]) -> Callable[[Policy], list[Policy]]:
    """A plant that edits one ingress rule of the chart's own policy."""
    def plant(chart_policy: Policy) -> list[Policy]:
        edit(chart_policy["spec"]["ingress"][index])
        return [chart_policy]
    return plant


def _beside(*extra: Policy) -> Callable[[Policy], list[Policy]]:
    """A plant that adds policies beside the chart's own (policies are additive)."""
    return lambda chart_policy: [chart_policy, *extra]


def _only_monitoring(chart_policy: Policy) -> list[Policy]:
    chart_policy["spec"]["ingress"] = chart_policy["spec"]["ingress"][1:]
    return [chart_policy]


def _without_monitoring(chart_policy: Policy) -> list[Policy]:
    del chart_policy["spec"]["ingress"][MONITORING_RULE]
    return [chart_policy]


def _router_peer(edit: Callable[[dict[str, Any]], None]) -> Callable[[Policy], list[Policy]]:
    return _ingress(0, lambda rule: edit(rule["from"][0]))


def _monitoring_peer(edit: Callable[[dict[str, Any]], None]) -> Callable[[Policy], list[Policy]]:
    return _ingress(MONITORING_RULE, lambda rule: edit(rule["from"][0]))


PLANTS = [
    ("broad-policy-without-from", _beside(policy("open-all", {}, [{}])),
     ["NetworkPolicy open-all ingress[0] has no `from`: it admits every source",
      "NetworkPolicy open-all ingress[0] lists no ports"]),
    ("broad-policy-every-namespace",
     _beside(policy("every-ns", {}, [{"from": [{"namespaceSelector": {}}], "ports": HTTP}])),
     ["NetworkPolicy every-ns ingress[0] peer namespaceSelector {}: an empty namespaceSelector admits every "
      "namespace"]),
    ("router-peer-any-namespace", _router_peer(lambda peer: peer.update(namespaceSelector={})),
     [f"NetworkPolicy {CHART_POLICY} ingress[0] peer podSelector {{app.kubernetes.io/component=gateway, "
      "app.kubernetes.io/name=ias-router} namespaceSelector {}: an empty namespaceSelector admits every namespace"]),
    ("router-peer-label-subset",
     _router_peer(lambda peer: peer["podSelector"]["matchLabels"].pop("app.kubernetes.io/component")),
     [f"NetworkPolicy {CHART_POLICY} ingress[0] peer podSelector {{app.kubernetes.io/name=ias-router}}: "
      "podSelector is not exactly the router labels"]),
    ("router-peer-by-expressions", _router_peer(lambda peer: peer.update(podSelector={"matchExpressions": [
        {"key": "app.kubernetes.io/name", "operator": "In", "values": ["ias-router"]}]})),
     [f"NetworkPolicy {CHART_POLICY} ingress[0] peer podSelector {{app.kubernetes.io/name In ['ias-router']}}: "
      "podSelector is not exactly the router labels"]),
    ("rule-without-ports", _ingress(0, lambda rule: rule.pop("ports")),
     [f"NetworkPolicy {CHART_POLICY} ingress[0] lists no ports: it admits every port"]),
    ("another-port", _ingress(1, lambda rule: rule["ports"].append({"port": 9090, "protocol": "TCP"})),
     [f"NetworkPolicy {CHART_POLICY} ingress[1] port 9090 is not the serving port (http / 8000)"]),
    ("port-range", _ingress(0, lambda rule: rule.update(ports=[{"port": 8000, "endPort": 8100}])),
     [f"NetworkPolicy {CHART_POLICY} ingress[0] port range 8000-8100"]),
    ("udp", _ingress(1, lambda rule: rule["ports"].append({"port": "http", "protocol": "UDP"})),
     [f"NetworkPolicy {CHART_POLICY} ingress[1] port http/UDP is not TCP"]),
    ("ip-block", _ingress(1, lambda rule: rule["from"].append({"ipBlock": {"cidr": "10.0.0.0/8"}})),
     [f"NetworkPolicy {CHART_POLICY} ingress[1] ipBlock 10.0.0.0/8 admits addresses"]),
    ("ip-block-with-except", _beside(policy("addresses", {}, [{"from": [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}], "ports": HTTP}])),
     ["NetworkPolicy addresses ingress[0] ipBlock 0.0.0.0/0 except ['10.0.0.0/8'] admits addresses"]),
    ("monitoring-peer-other-namespaces",
     _monitoring_peer(lambda peer: peer.update(namespaceSelector={"matchLabels": {"team": "ops"}})),
     [f"NetworkPolicy {CHART_POLICY} ingress[1] peer podSelector {{app.kubernetes.io/name=prometheus}} "
      "namespaceSelector {team=ops} admits Prometheus-labelled pods in its namespaceSelector, not namespace "
      "monitoring alone", NO_PROMETHEUS]),
    # The whole monitoring namespace: the Prometheus podSelector dropped from the chart's peer, or a policy beside.
    ("monitoring-peer-whole-namespace", _monitoring_peer(lambda peer: peer.pop("podSelector")),
     [f"NetworkPolicy {CHART_POLICY} ingress[1] peer namespaceSelector {{kubernetes.io/metadata.name=monitoring}} "
      "admits every pod of namespace monitoring, not only the Prometheus pods {'app.kubernetes.io/name': "
      "'prometheus'}: the peer needs the podSelector too"]),
    ("monitoring-namespace-beside",
     _beside(policy("scrape-all", {}, [{"from": [{"namespaceSelector": MONITORING_NS}], "ports": HTTP}])),
     ["NetworkPolicy scrape-all ingress[0] peer namespaceSelector {kubernetes.io/metadata.name=monitoring} admits "
      "every pod of namespace monitoring, not only the Prometheus pods"]),
    ("monitoring-peer-every-pod", _monitoring_peer(lambda peer: peer.update(podSelector={})),
     [f"NetworkPolicy {CHART_POLICY} ingress[1] peer podSelector {{}} namespaceSelector {{kubernetes.io/metadata."
      "name=monitoring}: podSelector does not require the Prometheus pod labels {'app.kubernetes.io/name': "
      "'prometheus'}, so it admits other pods of namespace monitoring"]),
    ("monitoring-peer-other-pods",
     _monitoring_peer(lambda peer: peer["podSelector"].update(matchLabels={"app.kubernetes.io/name": "grafana"})),
     [f"NetworkPolicy {CHART_POLICY} ingress[1] peer podSelector {{app.kubernetes.io/name=grafana}} "
      "namespaceSelector {kubernetes.io/metadata.name=monitoring}: podSelector does not require the Prometheus pod "
      "labels", NO_PROMETHEUS]),
    ("monitoring-peer-without-namespace", _monitoring_peer(lambda peer: peer.pop("namespaceSelector")),
     [f"NetworkPolicy {CHART_POLICY} ingress[1] peer podSelector {{app.kubernetes.io/name=prometheus}} admits "
      "Prometheus-labelled pods in namespace {ns}, not namespace monitoring alone", NO_PROMETHEUS]),
    ("monitoring-on-another-port", _ingress(MONITORING_RULE, lambda rule: rule.update(
        ports=[{"port": 9090, "protocol": "TCP"}])),
     [f"NetworkPolicy {CHART_POLICY} ingress[1] port 9090 is not the serving port (http / 8000), admitted to "
      f"peer {PROMETHEUS_PEER}", NO_PROMETHEUS]),
    ("monitoring-on-every-port", _ingress(MONITORING_RULE, lambda rule: rule.pop("ports")),
     [f"NetworkPolicy {CHART_POLICY} ingress[1] lists no ports: it admits every port to peer {PROMETHEUS_PEER}"]),
    ("prometheus-not-admitted", _without_monitoring, [NO_PROMETHEUS]),
    ("selecting-policy-by-expressions", _beside(policy("by-expressions", {"matchExpressions": [
        {"key": "app.kubernetes.io/component", "operator": "In", "values": ["serving-engine"]},
        {"key": "app.kubernetes.io/instance", "operator": "Exists"}]},
        [{"from": [{"podSelector": {}}], "ports": HTTP}])),
     ["NetworkPolicy by-expressions ingress[0] peer podSelector {}: podSelector is not exactly the router labels"]),
    ("router-not-admitted", _only_monitoring,
     [NO_ROUTER]),
]


@pytest.mark.parametrize(("plant", "causes"), [(p, c) for _, p, c in PLANTS], ids=[i for i, _, _ in PLANTS])
def test_a_broader_policy_is_named(api, namespace, chart_policy, pod_labels, allowed, plant, causes):
    create(api, namespace, *plant(chart_policy))
    problems = network_policy_problems(api, namespace, pod_labels, allowed)
    assert_named(problems, [cause.replace("{ns}", namespace) for cause in causes])


def test_router_in_another_namespace_passes_only_there(api, namespace, allowed):
    spec = model("network.router_namespace=ias-router")
    policy_there, labels = rendered(spec)
    create(api, namespace, policy_there)
    assert network_policy_problems(api, namespace, labels, AllowedIngress.for_spec(spec)) == []
    # The same objects, judged for a router in the model's own namespace: the peer admits another namespace,
    # and the helm test pod's rule is not allowed (there the test pod passes as the router does).
    problems = network_policy_problems(api, namespace, labels, allowed)
    assert_named(problems, [f"NetworkPolicy {CHART_POLICY} ingress[0] peer podSelector {{app.kubernetes.io/"
                            "component=gateway, app.kubernetes.io/name=ias-router} namespaceSelector "
                            "{kubernetes.io/metadata.name=ias-router} admits router-labelled pods in its "
                            f"namespaceSelector, not namespace {namespace} alone",
                            f"NetworkPolicy {CHART_POLICY} ingress[1] peer podSelector {{app.kubernetes.io/"
                            "component=gateway, app.kubernetes.io/name=ias-router, vllm-gate/helm-test=llama3}: "
                            "podSelector is not exactly the router labels",
                            f"no NetworkPolicy in {namespace} admits the router"])


OBSERVABILITY = ["monitoring.namespace=observability", 'monitoring.prometheus_pod_labels={"app.kubernetes.io/name": '
                 '"prometheus", "operator.prometheus.io/name": "k8s"}']


def test_the_prometheus_pods_come_from_the_specs_monitoring_section(api, namespace, allowed):
    spec = model(*OBSERVABILITY)
    theirs = AllowedIngress.for_spec(spec)
    assert (theirs.monitoring_namespace, theirs.prometheus_labels) == ("observability",
                                                                      spec.monitoring.prometheus_pod_labels)
    policy_there, labels = rendered(spec)
    create(api, namespace, policy_there)
    assert network_policy_problems(api, namespace, labels, theirs) == []
    # The same policy, judged for the default monitoring section: its peer is Prometheus of another namespace.
    problems = network_policy_problems(api, namespace, labels, allowed)
    assert_named(problems, [f"NetworkPolicy {CHART_POLICY} ingress[1] peer podSelector {{app.kubernetes.io/name="
                            "prometheus, operator.prometheus.io/name=k8s} namespaceSelector {kubernetes.io/metadata."
                            "name=observability} admits Prometheus-labelled pods in its namespaceSelector, not "
                            "namespace monitoring alone", NO_PROMETHEUS])


ELSEWHERE = "network.router_namespace=ias-router"
TEST_POD_RULE = 1  # with the router elsewhere: ingress[0] router, [1] the helm test pod, [2] monitoring
TEST_LABELS = "app.kubernetes.io/component=gateway, app.kubernetes.io/name=ias-router, vllm-gate/helm-test=llama3"


def _test_pod_peer(edit: Callable[[dict[str, Any]], None]) -> Callable[[Policy], None]:
    return lambda chart_policy: edit(chart_policy["spec"]["ingress"][TEST_POD_RULE]["from"][0])


TEST_POD_PLANTS = [
    ("without-the-test-label",
     _test_pod_peer(lambda peer: peer["podSelector"]["matchLabels"].pop(HELM_TEST_LABEL)),
     "peer podSelector {app.kubernetes.io/component=gateway, app.kubernetes.io/name=ias-router} admits "
     "router-labelled pods in namespace {ns}, not namespace ias-router alone"),
    ("another-release", _test_pod_peer(lambda peer: peer["podSelector"]["matchLabels"].update(
        {HELM_TEST_LABEL: "other"})),
     f"peer podSelector {{{TEST_LABELS.replace('=llama3', '=other')}}}: podSelector is not exactly the router labels"),
    ("every-namespace", _test_pod_peer(lambda peer: peer.update(namespaceSelector={})),
     f"peer podSelector {{{TEST_LABELS}}} namespaceSelector {{}}: an empty namespaceSelector admits every namespace"),
    ("router-namespace", _test_pod_peer(lambda peer: peer.update(
        namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "ias-router"}})),
     f"peer podSelector {{{TEST_LABELS}}} namespaceSelector {{kubernetes.io/metadata.name=ias-router}}: "
     "podSelector is not exactly the router labels"),
    ("another-port", lambda chart_policy: chart_policy["spec"]["ingress"][TEST_POD_RULE]["ports"].append(
        {"port": 9090, "protocol": "TCP"}), "port 9090 is not the serving port (http / 8000)"),
]


@pytest.mark.parametrize(("plant", "cause"), [(p, c) for _, p, c in TEST_POD_PLANTS],
                         ids=[i for i, _, _ in TEST_POD_PLANTS])
def test_the_helm_test_pod_rule_admits_that_pod_alone(api, namespace, plant, cause):
    spec = model(ELSEWHERE)
    chart_policy, labels = rendered(spec)
    plant(chart_policy)
    create(api, namespace, chart_policy)
    problems = network_policy_problems(api, namespace, labels, AllowedIngress.for_spec(spec))
    where = f"NetworkPolicy {CHART_POLICY} ingress[{TEST_POD_RULE}] "
    assert_named(problems, [where + cause.replace("{ns}", namespace)])


def test_the_helm_test_pod_rule_is_allowed_only_with_the_router_elsewhere():
    assert AllowedIngress.for_spec(model()).test_pod_labels is None
    assert AllowedIngress.for_spec(model("network.router_namespace=ias-production")).test_pod_labels is None
    assert AllowedIngress.for_spec(model(ELSEWHERE)).test_pod_labels == {**ROUTER, HELM_TEST_LABEL: "llama3"}


def test_router_in_another_namespace_is_not_the_one_beside_the_model(api, namespace, chart_policy, pod_labels,
                                                                      allowed):
    create(api, namespace, chart_policy)
    elsewhere = replace(allowed, router_namespace="ias-router")
    problems = network_policy_problems(api, namespace, pod_labels, elsewhere)
    assert_named(problems, [f"admits router-labelled pods in namespace {namespace}, not namespace ias-router alone",
                            f"no NetworkPolicy in {namespace} admits the router"])


def _selector(labels: dict[str, str] | None = None, *expressions: tuple[str, str, list[str] | None]
              ) -> client.V1LabelSelector:
    return client.V1LabelSelector(match_labels=labels, match_expressions=[
        client.V1LabelSelectorRequirement(key=k, operator=op, values=v) for k, op, v in expressions] or None)


@pytest.mark.parametrize(("selector", "matches"), [
    (_selector(), True),
    (_selector({"a": "1"}), True),
    (_selector({"a": "1", "b": "2"}), False),
    (_selector(None, ("a", "In", ["1", "2"])), True),
    (_selector(None, ("a", "In", ["2"])), False),
    (_selector(None, ("b", "In", ["2"])), False),
    (_selector(None, ("a", "NotIn", ["2"])), True),
    (_selector(None, ("a", "NotIn", ["1"])), False),
    (_selector(None, ("b", "NotIn", ["1"])), True),
    (_selector(None, ("a", "Exists", None)), True),
    (_selector(None, ("b", "Exists", None)), False),
    (_selector(None, ("b", "DoesNotExist", None)), True),
    (_selector(None, ("a", "DoesNotExist", None)), False),
    (_selector({"a": "1"}, ("c", "Exists", None), ("b", "DoesNotExist", None)), True),
    (_selector({"a": "1"}, ("c", "In", ["x"]), ("b", "DoesNotExist", None)), False),
])
def test_label_selector_follows_kubernetes_semantics(selector, matches):
    assert label_selector_matches(selector, {"a": "1", "c": "3"}) is matches
