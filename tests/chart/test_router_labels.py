"""The router labels the NetworkPolicy and the helm test pod carry: exactly the ones given, or the default when
none are; never the union of both (Helm merges a values map into the chart's default map). Rendered by the real
helm.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from tests.chart.strict_yaml import template
from tests.conftest import require
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.checks.exposure import HELM_TEST_LABEL, label_selector_matches
from vllm_gate.deploy.values import chart_values
from vllm_gate.spec import load_spec

ROUTER = {"app": "router"}  # a router without the chart's default label, app.kubernetes.io/name=ias-router
DEFAULT_ROUTER = {"app.kubernetes.io/name": "ias-router"}
# The helm test pod's own bookkeeping labels, beside the router's and vllm-gate/helm-test.
TEST_POD_BOOKKEEPING = {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of",
                        "app.kubernetes.io/component"}


@pytest.fixture(autouse=True)
def _helm() -> None:
    require("helm")


def policy_and_test_pod(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """The NetworkPolicy and the helm test pod's labels less its bookkeeping ones."""
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    labels = {key: value for key, value in pod["metadata"]["labels"].items() if key not in TEST_POD_BOOKKEEPING}
    return policy, labels


def router_peer(policy: dict[str, Any]) -> dict[str, str]:
    return policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]


@pytest.mark.parametrize("router_namespace", [None, "ias-router"], ids=["router-beside", "router-elsewhere"])
def test_spec_router_labels_replace_the_default_ones(router_namespace: str | None):
    sets = [f"network.router_pod_labels={json.dumps(ROUTER)}"]
    if router_namespace:
        sets.append(f"network.router_namespace={router_namespace}")
    spec = load_spec("llama3", MODELS_DIR, sets)
    policy, test_pod = policy_and_test_pod(template(chart_values(spec), release=spec.name,
                                                    namespace=spec.namespace))
    assert router_peer(policy) == ROUTER
    assert label_selector_matches(client.V1LabelSelector(match_labels=router_peer(policy)), ROUTER), \
        "the real router, which lacks the default label, must be admitted"
    assert test_pod == {**ROUTER, HELM_TEST_LABEL: spec.name}
    if router_namespace:
        assert policy["spec"]["ingress"][1]["from"] == [
            {"podSelector": {"matchLabels": {**ROUTER, HELM_TEST_LABEL: spec.name}}}]


def test_a_values_file_router_labels_replace_the_default_ones():
    """A plain ``helm install -f``: only the router labels given, every other value the chart's."""
    policy, test_pod = policy_and_test_pod(template({"networkPolicy": {"routerPodLabels": ROUTER}}))
    assert router_peer(policy) == ROUTER
    assert test_pod == {**ROUTER, HELM_TEST_LABEL: "llama3"}


@pytest.mark.parametrize("labels", ["unset", {}, None], ids=["unset", "empty", "null"])
def test_no_router_labels_mean_the_default_ones(labels: dict[str, str] | str | None):
    values = chart_values(load_spec("llama3", MODELS_DIR))
    if labels == "unset":
        del values["networkPolicy"]["routerPodLabels"]
    else:
        values["networkPolicy"]["routerPodLabels"] = labels
    policy, test_pod = policy_and_test_pod(template(values))
    assert router_peer(policy) == DEFAULT_ROUTER
    assert test_pod == {**DEFAULT_ROUTER, HELM_TEST_LABEL: "llama3"}
