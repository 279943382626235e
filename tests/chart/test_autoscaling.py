"""A spec's scaling policy becomes an autoscaling/v2 HPA on the signal's metric, named for the image's vLLM
release; the Deployment then leaves its replica count to the HPA. Without a policy, neither."""

from __future__ import annotations

import kubernetes_validate
import pytest

from tests.chart.strict_yaml import dry_run_notes, template, template_error
from tests.chart.test_render import K8S_VERSION, only
from tests.conftest import require
from vllm_gate.base.errors import SpecError
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.deploy.render import render_manifests
from vllm_gate.deploy.values import chart_values
from vllm_gate.spec import load_spec

POLICY = ["autoscaling.enabled=true", "autoscaling.min_replicas=1", "autoscaling.max_replicas=3"]


@pytest.fixture(autouse=True)
def _helm():
    require("helm")


def test_no_policy_renders_no_hpa_and_a_replica_count():
    spec = load_spec("llama3", MODELS_DIR)
    docs = render_manifests(spec, chart_values(spec))
    assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert only(docs, "Deployment")["spec"]["replicas"] == 1


def test_a_policy_renders_a_valid_hpa_that_owns_the_replica_count():
    spec = load_spec("llama3", MODELS_DIR, [*POLICY, "autoscaling.target=1.5",
                                            "autoscaling.scale_down_stabilization_s=900"])
    docs = render_manifests(spec, chart_values(spec))
    hpa = only(docs, "HorizontalPodAutoscaler")
    kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)
    deployment = only(docs, "Deployment")
    assert "replicas" not in deployment["spec"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert hpa["spec"]["metrics"] == [{"type": "Pods", "pods": {
        "metric": {"name": "vllm_num_requests_waiting"}, "target": {"type": "AverageValue", "averageValue": "1500m"}}}]
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 900
    assert hpa["spec"]["behavior"]["scaleUp"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]


@pytest.mark.parametrize(("overrides", "metric"), [
    (["autoscaling.signal=kv_cache", "autoscaling.target=0.7"], "vllm_kv_cache_usage_perc"),  # v0.11.0
    (["autoscaling.signal=kv_cache", "autoscaling.target=0.7", "image.tag=v0.8.5"], "vllm_gpu_cache_usage_perc"),
    (["autoscaling.signal=gpu_utilization", "autoscaling.target=80"], "DCGM_FI_DEV_GPU_UTIL"),
    (["autoscaling.metric_name=vllm_num_requests_running"], "vllm_num_requests_running"),
])
def test_the_metric_follows_the_signal_and_the_engines_release(overrides, metric):
    spec = load_spec("llama3", MODELS_DIR, [*POLICY, *overrides])
    hpa = only(render_manifests(spec, chart_values(spec)), "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == metric


@pytest.mark.parametrize(("overrides", "message"), [
    (["autoscaling.min_replicas=3", "autoscaling.max_replicas=2"], "min_replicas 3 is above max_replicas 2"),
    (["autoscaling.signal=kv_cache", "autoscaling.target=70"], "the KV cache's used share is between 0 and 1"),
])
def test_an_impossible_policy_is_a_spec_error(overrides, message):
    with pytest.raises(SpecError, match=message):
        load_spec("llama3", MODELS_DIR, overrides)


KEDA = ["autoscaling.controller=keda", "autoscaling.keda_prometheus_url=http://prometheus.monitoring.svc:9090"]
SCALED_OBJECT = "keda.sh/v1alpha1/ScaledObject"


def test_keda_where_the_cluster_serves_it_renders_a_scaled_object_and_no_hpa():
    spec = load_spec("llama3", MODELS_DIR, [*POLICY, *KEDA, "autoscaling.target=1.5"])
    docs = template(chart_values(spec), release=spec.name, namespace=spec.namespace, api_versions=(SCALED_OBJECT,))
    assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    scaled = only(docs, "ScaledObject")
    deployment = only(docs, "Deployment")
    name = deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"]
    assert scaled["spec"]["scaleTargetRef"] == {"name": name}
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 3)
    hpa_config = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]
    assert hpa_config["name"] == name  # the gate reads the HPA KEDA creates by the release's name
    assert hpa_config["behavior"]["scaleUp"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]
    (trigger,) = scaled["spec"]["triggers"]
    assert (trigger["type"], trigger["metricType"]) == ("prometheus", "AverageValue")
    assert trigger["metadata"] == {
        "serverAddress": "http://prometheus.monitoring.svc:9090", "threshold": "1.5",  # a plain number for KEDA
        "query": f'sum(vllm:num_requests_waiting{{namespace="{spec.namespace}",pod=~"{name}-[a-z0-9]+-[a-z0-9]+"}})'}


@pytest.mark.parametrize(("target", "threshold"), [("0.7", "0.7"), ("2", "2"), ("0.00001", "0.00001")])
def test_kedas_threshold_is_a_plain_number_never_a_quantity_or_an_exponent(target, threshold):
    spec = load_spec("llama3", MODELS_DIR, [*POLICY, *KEDA, "autoscaling.signal=kv_cache" if float(target) < 1
                                            else "autoscaling.signal=queue", f"autoscaling.target={target}"])
    docs = template(chart_values(spec), release=spec.name, namespace=spec.namespace, api_versions=(SCALED_OBJECT,))
    assert only(docs, "ScaledObject")["spec"]["triggers"][0]["metadata"]["threshold"] == threshold


def test_keda_gpu_utilization_averages_each_pods_gpus_from_dcgms_exported_labels():
    spec = load_spec("llama3", MODELS_DIR, [*POLICY, *KEDA, "autoscaling.signal=gpu_utilization",
                                            "autoscaling.target=80"])
    docs = template(chart_values(spec), release=spec.name, namespace=spec.namespace, api_versions=(SCALED_OBJECT,))
    query = only(docs, "ScaledObject")["spec"]["triggers"][0]["metadata"]["query"]
    assert query.startswith("sum(avg by (exported_pod) (DCGM_FI_DEV_GPU_UTIL{exported_namespace=")


def test_keda_on_a_cluster_without_it_falls_back_to_the_hpa_and_says_so():
    spec = load_spec("llama3", MODELS_DIR, [*POLICY, *KEDA])
    docs = template(chart_values(spec), release=spec.name, namespace=spec.namespace)
    assert not [d for d in docs if d["kind"] == "ScaledObject"]
    assert only(docs, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"]["name"] == \
        "vllm_num_requests_waiting"
    notes = dry_run_notes(chart_values(spec), spec.name, spec.namespace)
    assert "(autoscaling.controller is keda, but the cluster has no keda.sh/v1alpha1 ScaledObject)" in notes


def test_keda_needs_the_prometheus_its_trigger_asks_without_credentials():
    with pytest.raises(SpecError, match="controller keda: set keda_prometheus_url"):
        load_spec("llama3", MODELS_DIR, [*POLICY, "autoscaling.controller=keda"])
    with pytest.raises(SpecError, match="keda_prometheus_url") as refused:
        load_spec("llama3", MODELS_DIR, [*POLICY, "autoscaling.controller=keda",
                                         "autoscaling.keda_prometheus_url=http://admin:s3cret@prometheus:9090"])
    assert "s3cret" not in str(refused.value)  # echoed as http://***@prometheus:9090
    with pytest.raises(SpecError, match="keda_prometheus_url"):  # a password holding "/" is user info too
        load_spec("llama3", MODELS_DIR, [*POLICY, "autoscaling.controller=keda",
                                         "autoscaling.keda_prometheus_url=http://u:pa/ss@prometheus:9090"])
    values = chart_values(load_spec("llama3", MODELS_DIR, [*POLICY, *KEDA]))
    values["autoscaling"]["keda"]["prometheusAddress"] = ""
    assert "autoscaling.keda.prometheusAddress: name the Prometheus" in template_error(values)


def test_a_policy_with_room_for_one_replica_scales_nothing():
    with pytest.raises(SpecError, match="max_replicas 1 scales nothing"):
        load_spec("llama3", MODELS_DIR, ["autoscaling.enabled=true", "autoscaling.max_replicas=1"])
