"""The Pod Security level charts/vllm/README.md states, checked by the API server's own PodSecurity admission."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.chart.strict_yaml import template
from tests.conftest import running_local_cluster
from vllm_gate.base.kube import api_client
from vllm_gate.base.tools import CHART_DIR, MODELS_DIR
from vllm_gate.deploy.values import chart_values
from vllm_gate.spec import load_spec

LEVELS = ("baseline", "restricted")


@pytest.fixture(scope="module")
def core() -> Iterator[client.CoreV1Api]:
    for local in running_local_cluster("pss", data_plane=False):
        api = client.CoreV1Api(api_client(local.kubeconfig, local.context))
        for level in LEVELS:
            api.create_namespace({"metadata": {"name": f"pss-{level}", "labels": {
                "pod-security.kubernetes.io/enforce": level}}}, _request_timeout=15)
        yield api


def admitted(core: client.CoreV1Api, level: str, pod: dict[str, Any]) -> str:
    """'' when the namespace enforcing ``level`` admits the pod (server-side dry run), else the refusal."""
    try:
        core.create_namespaced_pod(f"pss-{level}", pod, dry_run="All", _request_timeout=15)
    except ApiException as exc:
        if exc.status != 403:  # only an admission refusal is an answer; anything else is a broken test
            raise
        return exc.body
    return ""


def pods(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model pod (from the Deployment's template) and the helm test pod."""
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    model = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "model"},
             "spec": deployment["spec"]["template"]["spec"]}
    test = next(d for d in docs if d["kind"] == "Pod")
    test["metadata"].pop("namespace", None)
    return model, test


def test_model_pod_is_baseline_and_test_pod_restricted(core):
    model, test = pods(template(chart_values(load_spec("llama3", MODELS_DIR))))
    assert admitted(core, "baseline", model) == ""
    refusal = admitted(core, "restricted", model)
    assert "runAsNonRoot != true" in refusal, refusal
    assert "allowPrivilegeEscalation" not in refusal
    assert "seccompProfile" not in refusal
    assert "unrestricted capabilities" not in refusal, refusal
    assert admitted(core, "restricted", test) == ""


def test_model_pod_is_restricted_with_run_as_non_root(core):
    model, _ = pods(template(files=(CHART_DIR / "ci" / "restricted-values.yaml",)))
    assert admitted(core, "restricted", model) == ""
