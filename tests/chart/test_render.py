"""Every spec renders with the real helm into valid Kubernetes 1.35 objects that obey our policy."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from tests.chart.strict_yaml import template
from tests.conftest import require
from vllm_gate.base.errors import RenderError
from vllm_gate.base.pod_owner import NOT_LISTENING_PORT
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.deploy.render import lint_chart, render_manifests
from vllm_gate.deploy.values import chart_values, go_duration
from vllm_gate.spec import ModelSpec, load_spec

K8S_VERSION = "1.35.0"
FAKE_TOKEN = "hf_" + "Z" * 34  # a token-shaped string that must never reach values or manifests


@pytest.fixture(autouse=True)
def _helm():
    require("helm")


@pytest.fixture
def docs(spec: ModelSpec, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The spec's objects from helm template, parsed by a loader that refuses a key written twice."""
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    return template(chart_values(spec), release=spec.name, namespace=spec.namespace)


def only(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and "helm.sh/hook" not in d["metadata"].get("annotations", {})]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(docs: list[dict]) -> dict:
    return only(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def flag(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} should appear once in {args}"
    return args[args.index(name) + 1]


def test_helm_lint_passes(spec):
    assert "0 chart(s) failed" in lint_chart(spec)


def test_every_object_validates_against_kubernetes_schema(docs):
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget", "Pod"} <= kinds
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_vllm_settings_are_cli_args_not_env(spec, docs):
    c = container(docs)
    args = c["args"]
    assert c["command"] == ["vllm", "serve"]
    assert args[0] == spec.model_id
    assert flag(args, "--served-model-name") == spec.served_name
    assert int(flag(args, "--max-model-len")) == spec.vllm.max_model_len
    assert float(flag(args, "--gpu-memory-utilization")) == spec.vllm.gpu_memory_utilization
    assert int(flag(args, "--tensor-parallel-size")) == spec.vllm.tensor_parallel_size
    assert int(flag(args, "--port")) == spec.service.port
    assert not [a for a in args if a.startswith(("--time-to-first-token", "--inter-token-latency"))], \
        "vLLM rejects the simulator's latency flags"
    env_names = {e["name"] for e in c["env"]}
    assert not {n for n in env_names if n.startswith("VLLM_")}, env_names


def test_image_is_pinned(spec, docs):
    image = container(docs)["image"]
    assert image == f"{spec.image.repository}:{spec.image.tag}"
    assert not image.endswith(":latest")


def test_probes_cover_startup_then_stay_tight(spec, docs):
    c = container(docs)
    startup = c["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= spec.startup.timeout_s
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"
        assert c[probe]["periodSeconds"] * c[probe]["failureThreshold"] <= 60
        assert "initialDelaySeconds" not in c[probe]


def test_shm_is_memory_backed_and_service_links_are_off(spec, docs):
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": spec.resources.shm_size}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]


def test_hf_token_only_by_secret_reference(docs):
    env = {e["name"]: e for e in container(docs)["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    assert "value" not in env["HF_TOKEN"]
    assert FAKE_TOKEN not in yaml.safe_dump_all(docs)


def test_values_never_carry_a_token(spec, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    assert FAKE_TOKEN not in yaml.safe_dump(chart_values(spec))


def test_gpu_limits_selector_and_toleration_follow_the_spec(spec, docs):
    c = container(docs)
    gpus = str(spec.resources.gpus)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert c["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert c["resources"]["requests"]["memory"] == spec.resources.memory_request
    assert c["resources"]["limits"]["memory"] == spec.resources.memory_limit
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu-type": spec.resources.gpu_type}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_only_clusterip_and_nothing_exposed(spec, docs):
    svc = only(docs, "Service")
    assert svc["metadata"]["name"] == spec.service.name
    assert svc["spec"]["type"] == "ClusterIP"
    assert not {"externalIPs", "loadBalancerIP", "externalName"} & set(svc["spec"])
    assert all("nodePort" not in p for p in svc["spec"]["ports"])
    assert not {d["kind"] for d in docs} & {"Ingress", "HTTPRoute", "Route", "Gateway"}
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert not pod.get("hostNetwork")
    assert all("hostPort" not in p for c in pod["containers"] for p in c.get("ports", []))


def test_network_policy_admits_only_router_and_monitoring(spec, docs):
    policy = only(docs, "NetworkPolicy")["spec"]
    selector = only(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert policy["podSelector"]["matchLabels"] == selector
    assert policy["policyTypes"] == ["Ingress"]
    peers = [peer for rule in policy["ingress"] for peer in rule["from"]]
    assert peers == [
        {"podSelector": {"matchLabels": spec.network.router_pod_labels}},
        {"podSelector": {"matchLabels": spec.monitoring.prometheus_pod_labels},
         "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": spec.monitoring.namespace}}},
    ]
    assert all(rule["ports"] == [{"port": "http", "protocol": "TCP"}] for rule in policy["ingress"])


def test_router_in_another_namespace_needs_both_selectors():
    spec = load_spec("llama3", MODELS_DIR, ["network.router_namespace=ias-router"])
    peer = only(render_manifests(spec), "NetworkPolicy")["spec"]["ingress"][0]["from"][0]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "ias-router"}}
    assert peer["podSelector"]["matchLabels"] == spec.network.router_pod_labels


def test_helm_test_hook_checks_health_and_models(spec, docs):
    hook = next(d for d in docs if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test")
    assert hook["kind"] == "Pod"
    assert "hook-succeeded" in hook["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    script = " ".join(hook["spec"]["containers"][0]["args"])
    assert "/health" in script
    assert "/v1/models" in script
    assert spec.served_name in script
    # It must pass the NetworkPolicy like the router does, and so is never Ready: a Ready pod with the router's
    # labels is an endpoint of the router's own Service (a TCP check of port 1, where nothing listens).
    for key, value in spec.network.router_pod_labels.items():
        assert hook["metadata"]["labels"][key] == value
    readiness = hook["spec"]["containers"][0]["readinessProbe"]
    assert readiness["tcpSocket"] == {"port": NOT_LISTENING_PORT}
    assert readiness["initialDelaySeconds"] >= 600


SIM_ACCEPTED = {"--model", "--served-model-name", "--port", "--max-model-len", "--max-num-seqs",
                "--time-to-first-token", "--inter-token-latency", "--time-to-first-token-std-dev",
                "--inter-token-latency-std-dev"}


def test_sim_engine_gets_only_simulator_flags(spec):
    sim = load_spec(spec.name, MODELS_DIR, ["engine=sim"])
    docs = render_manifests(sim)
    c = container(docs)
    flags = {a for a in c["args"] if a.startswith("--")}
    # The llm-d image refuses any other flag and does not start (the stand-in's own settings travel as
    # annotations: tests/chart/test_sim_model_args.py).
    assert flags <= SIM_ACCEPTED, flags - SIM_ACCEPTED
    assert flag(c["args"], "--model") == spec.model_id
    assert c["image"].startswith("ghcr.io/llm-d/llm-d-inference-sim:")
    assert "command" not in c
    assert c["resources"]["limits"]["nvidia.com/gpu"] == str(spec.resources.gpus)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_sim_engine_answers_with_the_specs_rehearsal_latency(spec):
    args = container(render_manifests(load_spec(spec.name, MODELS_DIR, ["engine=sim"])))["args"]
    profile = spec.rehearsal
    assert flag(args, "--time-to-first-token") == f"{profile.ttft_ms:g}ms"
    assert flag(args, "--time-to-first-token-std-dev") == f"{profile.ttft_std_ms:g}ms"
    assert flag(args, "--inter-token-latency") == f"{profile.itl_ms:g}ms"
    assert flag(args, "--inter-token-latency-std-dev") == f"{profile.itl_std_ms:g}ms"


def test_rehearsal_override_reaches_the_simulator():
    spec = load_spec("llama3", MODELS_DIR, ["engine=sim", "rehearsal.itl_ms=7.5", "rehearsal.itl_std_ms=0.25"])
    args = container(render_manifests(spec))["args"]
    assert (flag(args, "--inter-token-latency"), flag(args, "--inter-token-latency-std-dev")) == ("7.5ms", "0.25ms")


@pytest.mark.parametrize(("ms", "expected"), [(60.0, "60ms"), (22.5, "22.5ms"), (0.0, "0ms"), (1e-05, "0.00001ms"),
                                              (1234.125, "1234.125ms")])
def test_go_duration_is_exact(ms, expected):
    assert go_duration(ms) == expected


@pytest.mark.parametrize(("key", "value"), [("timeToFirstToken", "0s"), ("interTokenLatency", "0.0ms"),
                                            ("interTokenLatency", ""), ("timeToFirstToken", None)])
def test_chart_refuses_a_zero_latency_simulator(key, value):
    spec = load_spec("llama3", MODELS_DIR, ["engine=sim"])
    values = chart_values(spec)
    if value is None:
        del values["sim"][key]  # falls back to the chart's default, which is unset
    else:
        values["sim"][key] = value
    with pytest.raises(RenderError) as info:
        render_manifests(spec, values)
    assert f"sim.{key}" in str(info.value)
    assert "engine sim needs a latency above zero" in str(info.value)


@pytest.mark.parametrize(("path", "value", "message"), [
    (("service", "type"), "NodePort", "at '/service/type'"),
    (("sim", "interTokenLatencyStdDev"), "3", "at '/sim/interTokenLatencyStdDev'"),
    (("service", "type"), "LoadBalancer", "at '/service/type'"),
    (("image", "tag"), "latest", "image.tag: 'latest' is not a pinned version"),
    (("gpu", "count"), 2, "gpu.count (2) must equal model.tensorParallelSize (1)"),
    (("model", "maxModelLen"), "8192", "at '/model/maxModelLen'"),
    (("networkPolicy", "routerPodLabels"), {"app": 1}, "at '/networkPolicy/routerPodLabels/app'"),
    (("hfToken", "value"), FAKE_TOKEN, "at '/hfToken'"),
])
def test_chart_rejects_values_the_spec_would_have_refused(path, value, message):
    spec = load_spec("llama3", MODELS_DIR)
    values = chart_values(spec)
    values.setdefault(path[0], {})[path[1]] = value
    with pytest.raises(RenderError) as info:
        render_manifests(spec, values)
    assert message in str(info.value)
    assert FAKE_TOKEN not in info.value.summary
