"""Cache, shutdown, security, scheduling and schema options of the chart, rendered by the real helm.

Every rendered object validates strictly against Kubernetes 1.35 and is parsed by a loader that refuses
a key written twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes import client

from tests.chart.ci_values import CI_DIR, PREFIX, expected_values
from tests.chart.strict_yaml import helm, load_all_strict, template, template_error
from tests.conftest import require
from vllm_gate.base.tools import CHART_DIR, MODELS_DIR
from vllm_gate.checks.exposure import HELM_TEST_LABEL, label_selector_matches
from vllm_gate.deploy.values import chart_values
from vllm_gate.spec import load_spec

K8S_VERSION = "1.35.0"
CI_FILES = sorted(CI_DIR.glob("*-values.yaml"))


@pytest.fixture(autouse=True)
def _helm() -> None:
    require("helm")


def validate(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def of_kind(docs: list[dict[str, Any]], kind: str, hook: bool = False) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind
            and ("helm.sh/hook" in d["metadata"].get("annotations", {})) is hook]


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = of_kind(docs, "Deployment")
    return deployment["spec"]["template"]["spec"]


def hook_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The helm test pod."""
    (pod,) = of_kind(docs, "Pod", hook=True)
    return pod


def spec_docs(*sets: str, model: str = "llama3") -> tuple[Any, list[dict[str, Any]]]:
    spec = load_spec(model, MODELS_DIR, list(sets))
    return spec, template(chart_values(spec), release=spec.name, namespace=spec.namespace)


# --- the loader ------------------------------------------------------------------------------------------

def test_loader_refuses_a_key_written_twice():
    with pytest.raises(yaml.constructor.ConstructorError, match=r"found duplicate key 'app\.kubernetes\.io/name'"):
        load_all_strict("metadata:\n  labels:\n    app.kubernetes.io/name: a\n    app.kubernetes.io/name: b\n")
    assert load_all_strict("a: 1\n---\nb: {c: 2}\n") == [{"a": 1}, {"b": {"c": 2}}]


# --- helm lint and ci/ ------------------------------------------------------------------------------------

def test_helm_lint_passes_on_the_defaults():
    proc = helm("lint", "--strict", str(CHART_DIR))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_defaults_render_valid_objects():
    docs = template(release="vllm-defaults", namespace="default")
    validate(docs)
    assert "--max-model-len" in pod_spec(docs)["containers"][0]["args"]


@pytest.mark.parametrize("path", CI_FILES, ids=lambda p: p.name)
def test_every_ci_values_file_lints_and_renders_valid_objects(path: Path):
    proc = helm("lint", "--strict", str(CHART_DIR), "--values", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    validate(template(files=(path,)))


def test_ci_holds_each_model_specs_values_in_sync():
    expected = expected_values()
    assert len(expected) == len(list(MODELS_DIR.glob("*.yaml")))
    for path, values in expected.items():
        assert path.is_file(), f"{path.name} missing: run python -m tests.chart.ci_values"
        assert yaml.safe_load(path.read_text()) == values, f"{path.name} is stale: run python -m tests.chart.ci_values"
    stale = {p for p in CI_DIR.glob(f"{PREFIX}*-values.yaml")} - set(expected)
    assert not stale, f"ci/ files of no model spec: {sorted(p.name for p in stale)}"


# --- schema -----------------------------------------------------------------------------------------------

def test_schema_allows_global_and_ephemeral_storage():
    values = chart_values(load_spec("llama3", MODELS_DIR))
    values["global"] = {"imageRegistry": "registry.example.com", "anything": {"nested": [1, 2]}}
    values["resources"]["requests"]["ephemeral-storage"] = "150Gi"
    values["resources"]["limits"]["ephemeral-storage"] = "200Gi"
    container = pod_spec(template(values))["containers"][0]
    assert container["resources"]["requests"]["ephemeral-storage"] == "150Gi", "an explicit request wins"
    assert container["resources"]["limits"]["ephemeral-storage"] == "200Gi"


@pytest.mark.parametrize(("path", "value", "message"), [
    (("modelCahce",), {"type": "pvc"}, "additional properties 'modelCahce' not allowed"),
    (("modelCache", "sizeLimit"), "100Gi", "additional properties 'sizeLimit' not allowed"),
    (("securityContext", "runAsNonroot"), True, "additional properties 'runAsNonroot' not allowed"),
    (("podSecurityContext", "fsgroup"), 1000, "additional properties 'fsgroup' not allowed"),
    (("resources", "requests", "ephemeral_storage"), "1Gi", "additional properties 'ephemeral_storage' not allowed"),
    (("modelCache", "accessMode"), "ReadOnlyMany", "at '/modelCache/accessMode'"),
    (("shutdown", "drainSecond"), 10, "additional properties 'drainSecond' not allowed"),
])
def test_schema_still_catches_typos(path: tuple[str, ...], value: Any, message: str):
    values = chart_values(load_spec("llama3", MODELS_DIR))
    node = values
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    assert message in template_error(values)


# --- integers ---------------------------------------------------------------------------------------------

def test_a_large_max_model_len_renders_as_an_integer():
    _spec, docs = spec_docs("vllm.max_model_len=1000000")
    args = pod_spec(docs)["containers"][0]["args"]
    assert args[args.index("--max-model-len") + 1] == "1000000"
    _, sim = spec_docs("vllm.max_model_len=1048576", "engine=sim")
    args = pod_spec(sim)["containers"][0]["args"]
    assert args[args.index("--max-model-len") + 1] == "1048576"


def test_large_integers_from_a_values_file_stay_integers():
    docs = template(files=(CI_DIR / "large-numbers-values.yaml",))
    pod = pod_spec(docs)
    args = pod["containers"][0]["args"]
    assert args[args.index("--max-model-len") + 1] == "1000000"
    assert pod["terminationGracePeriodSeconds"] == 1000000


# --- model cache ------------------------------------------------------------------------------------------

def cache_volume(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = pod_spec(docs)
    container = pod["containers"][0]
    assert {"name": "model-cache", "mountPath": "/data"} in container["volumeMounts"]
    assert {"name": "HF_HOME", "value": "/data"} in container["env"]
    return next(v for v in pod["volumes"] if v["name"] == "model-cache")


def test_emptydir_cache_is_requested_as_ephemeral_storage():
    _, docs = spec_docs("model_cache.size=80Gi")
    validate(docs)
    assert cache_volume(docs) == {"name": "model-cache", "emptyDir": {"sizeLimit": "80Gi"}}
    assert pod_spec(docs)["containers"][0]["resources"]["requests"]["ephemeral-storage"] == "80Gi"
    assert not of_kind(docs, "PersistentVolumeClaim")


def test_pvc_cache_is_created_by_the_chart():
    _, docs = spec_docs("model_cache.kind=pvc", "model_cache.size=200Gi", "model_cache.storage_class=fast-nfs",
                           "model_cache.access_mode=ReadWriteMany", "startup.assumes_warm_cache=true")
    validate(docs)
    (claim,) = of_kind(docs, "PersistentVolumeClaim")
    assert claim["spec"] == {"accessModes": ["ReadWriteMany"], "storageClassName": "fast-nfs",
                             "resources": {"requests": {"storage": "200Gi"}}}
    assert cache_volume(docs) == {"name": "model-cache",
                                  "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
    assert "ephemeral-storage" not in pod_spec(docs)["containers"][0]["resources"]["requests"]
    assert claim["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}, "the weights outlive an uninstall"


def test_pvc_cache_defaults_to_the_clusters_storage_class_and_read_write_once():
    _, docs = spec_docs("model_cache.kind=pvc")
    (claim,) = of_kind(docs, "PersistentVolumeClaim")
    assert "storageClassName" not in claim["spec"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_existing_claim_is_mounted_and_not_created():
    _, docs = spec_docs("model_cache.kind=existingClaim", "model_cache.claim_name=shared-hf-cache")
    validate(docs)
    assert not of_kind(docs, "PersistentVolumeClaim")
    assert cache_volume(docs) == {"name": "model-cache", "persistentVolumeClaim": {"claimName": "shared-hf-cache"}}


@pytest.mark.parametrize(("changes", "message"), [
    ({"type": "existingClaim"}, "modelCache.existingClaim: name the PersistentVolumeClaim"),
    ({"existingClaim": "stray"}, 'modelCache.existingClaim "stray" is set but modelCache.type is emptyDir'),
])
def test_chart_refuses_an_inconsistent_cache(changes: dict[str, str], message: str):
    values = chart_values(load_spec("llama3", MODELS_DIR))
    values["modelCache"].update(changes)
    assert message in template_error(values)


def test_a_read_write_once_pod_claim_cannot_take_a_surge_pod():
    values = chart_values(load_spec("llama3", MODELS_DIR, ["model_cache.kind=pvc",
                                                           "model_cache.access_mode=ReadWriteOncePod"]))
    template(values)
    values["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert "modelCache.accessMode ReadWriteOncePod admits one pod" in template_error(values)


# --- graceful shutdown ------------------------------------------------------------------------------------

def test_prestop_sleeps_before_sigterm_and_grace_covers_the_drain():
    spec, docs = spec_docs("shutdown.endpoint_removal_s=20", "shutdown.drain_s=100")
    pod = pod_spec(docs)
    assert pod["containers"][0]["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", "20"]}}}
    assert pod["terminationGracePeriodSeconds"] == 120 == spec.shutdown.grace_period_s


def test_chart_refuses_a_grace_period_shorter_than_prestop_plus_drain():
    values = chart_values(load_spec("llama3", MODELS_DIR))
    values["terminationGracePeriodSeconds"] = 100
    assert "terminationGracePeriodSeconds (100) must be at least shutdown.preStopSleepSeconds + " \
           "shutdown.drainSeconds (130)" in template_error(values)


@pytest.mark.parametrize(("kube_version", "lifecycle"), [
    ("1.35.0", {"preStop": {"sleep": {"seconds": 15}}}),
    ("1.29.0", None),
])
def test_simulator_gets_the_sleep_action_where_the_cluster_has_it(kube_version: str, lifecycle: Any):
    spec = load_spec("llama3", MODELS_DIR, ["engine=sim"])
    docs = template(chart_values(spec), kube_version=kube_version)
    assert pod_spec(docs)["containers"][0].get("lifecycle") == lifecycle


# --- security and scheduling ------------------------------------------------------------------------------

def every_container(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, container) for the model pod and the helm test pod."""
    pods = [pod_spec(docs), hook_pod(docs)["spec"]]
    return [(pod, c) for pod in pods for c in pod["containers"]]


def test_every_pod_drops_capabilities_and_uses_runtime_default_seccomp(spec):
    docs = template(chart_values(spec), release=spec.name, namespace=spec.namespace)
    for pod, container in every_container(docs):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sc["capabilities"]
        seccomp = sc.get("seccompProfile") or pod["securityContext"]["seccompProfile"]
        assert seccomp == {"type": "RuntimeDefault"}
    assert hook_pod(docs)["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] is True
    assert "runAsNonRoot" not in pod_spec(docs)["securityContext"], "the vLLM image runs as root"


def test_security_context_is_configurable():
    docs = template(files=(CI_DIR / "restricted-values.yaml",))
    validate(docs)
    assert pod_spec(docs)["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                                                  "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}}


def test_runtime_and_priority_class_follow_the_spec():
    _, docs = spec_docs("scheduling.runtime_class_name=nvidia", "scheduling.priority_class_name=inference-high")
    validate(docs)
    pod = pod_spec(docs)
    assert (pod["runtimeClassName"], pod["priorityClassName"]) == ("nvidia", "inference-high")
    _, plain = spec_docs()
    assert not {"runtimeClassName", "priorityClassName", "affinity", "topologySpreadConstraints"} & set(
        pod_spec(plain))


def test_affinity_and_topology_spread_are_values():
    docs = template(files=(CI_DIR / "scheduling-values.yaml",))
    pod = pod_spec(docs)
    expected = yaml.safe_load((CI_DIR / "scheduling-values.yaml").read_text())
    assert pod["affinity"] == expected["affinity"]
    assert pod["topologySpreadConstraints"] == expected["topologySpreadConstraints"]


# --- the helm test pod and the NetworkPolicy --------------------------------------------------------------

def admits(policy: dict[str, Any], labels: dict[str, str], namespace: str, port: str) -> bool:
    """Does this (rendered) policy admit a pod with ``labels`` in ``namespace`` on ``port``?"""
    own = policy["metadata"].get("namespace")
    for rule in policy["spec"]["ingress"]:
        if port not in [p["port"] for p in rule.get("ports", [])]:
            continue
        for peer in rule["from"]:
            ns_selector = peer.get("namespaceSelector")
            in_namespace = namespace == own if ns_selector is None else label_selector_matches(
                client.V1LabelSelector(match_labels=ns_selector.get("matchLabels")),
                {"kubernetes.io/metadata.name": namespace})
            pods = peer.get("podSelector")
            if in_namespace and pods is not None and label_selector_matches(
                    client.V1LabelSelector(match_labels=pods.get("matchLabels")), labels):
                return True
    return False


ROUTER = {"app.kubernetes.io/name": "ias-router", "app.kubernetes.io/component": "gateway"}


@pytest.mark.parametrize("router_namespace", [None, "ias-router", "ias-production"])
def test_the_test_pod_is_admitted_wherever_the_router_lives(router_namespace: str | None):
    sets = [f"network.router_pod_labels={json.dumps(ROUTER)}"]
    if router_namespace:
        sets.append(f"network.router_namespace={router_namespace}")
    spec, docs = spec_docs(*sets)
    validate(docs)
    (policy,) = of_kind(docs, "NetworkPolicy")
    policy["metadata"]["namespace"] = spec.namespace  # helm test runs the pod in the release namespace
    labels = hook_pod(docs)["metadata"]["labels"]
    assert admits(policy, labels, spec.namespace, "http")
    # It is not one of the model pods: neither the Service nor the policy itself selects it.
    (service,) = of_kind(docs, "Service")
    assert not label_selector_matches(client.V1LabelSelector(match_labels=service["spec"]["selector"]), labels)
    assert not label_selector_matches(client.V1LabelSelector(match_labels=policy["spec"]["podSelector"][
        "matchLabels"]), labels)
    # A router-labelled pod elsewhere in the release namespace is admitted only when the router lives there.
    router_beside = admits(policy, ROUTER, spec.namespace, "http")
    assert router_beside is (router_namespace in (None, spec.namespace))
    extra_rule = len(policy["spec"]["ingress"]) == 3
    assert extra_rule is (router_namespace == "ias-router")
    if extra_rule:
        assert policy["spec"]["ingress"][1] == {
            "from": [{"podSelector": {"matchLabels": {**ROUTER, HELM_TEST_LABEL: spec.name}}}],
            "ports": [{"port": "http", "protocol": "TCP"}]}


def test_without_helm_tests_there_is_no_test_pod_nor_its_rule():
    values = chart_values(load_spec("llama3", MODELS_DIR, ["network.router_namespace=ias-router"]))
    values["tests"] = {"enabled": False}
    docs = template(values)
    assert not of_kind(docs, "Pod", hook=True)
    assert len(of_kind(docs, "NetworkPolicy")[0]["spec"]["ingress"]) == 2


# --- model specs ------------------------------------------------------------------------------------------

def test_mistral_downloads_only_the_shards_vllm_loads():
    _, docs = spec_docs(model="mistral-7b")
    args = pod_spec(docs)["containers"][0]["args"]
    assert args[args.index("--ignore-patterns") + 1] == "consolidated.safetensors"
    assert args[args.index("--load-format") + 1] == "safetensors"
