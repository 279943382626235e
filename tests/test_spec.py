"""Invalid specs and --set overrides fail before anything else, naming file, field and reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vllm_gate.base.errors import SpecError
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.spec import apply_overrides, load_spec, quantity_bytes

LLAMA3 = yaml.safe_load((MODELS_DIR / "llama3.yaml").read_text())


def _without(data: dict, dotted: str) -> dict:
    data = yaml.safe_load(yaml.safe_dump(data))
    *parents, last = dotted.split(".")
    node = data
    for p in parents:
        node = node[p]
    del node[last]
    return data


# (case id, spec file contents, --set overrides, text the one-line error must contain)
INVALID = [
    ("missing-field", _without(LLAMA3, "costs"), [], "costs: Field required"),
    ("missing-nested-field", _without(LLAMA3, "resources.gpus"), [], "resources.gpus: Field required"),
    ("negative-cost", LLAMA3, ["costs.input_per_1k=-0.0005"], "costs.input_per_1k: Input should be greater"),
    ("zero-gpus", LLAMA3, ["resources.gpus=0"], "resources.gpus: Input should be greater than or equal to 1"),
    ("non-integer-max-len", LLAMA3, ["vllm.max_model_len=8192.5"], "vllm.max_model_len: Input should be"),
    ("string-max-len", LLAMA3, ["vllm.max_model_len=lots"], "vllm.max_model_len: Input should be"),
    ("nodeport-service", LLAMA3, ["service.type=NodePort"], "service.type: Input should be 'ClusterIP'"),
    ("name-too-long", LLAMA3, ["name=" + "a" * 54], "name: String should have at most 53 characters"),
    ("name-not-dns", LLAMA3, ["name=Llama_3"], "name: String should match pattern"),
    ("service-name-too-long", LLAMA3, ["service.name=" + "s" * 64], "service.name: String should have at most"),
    ("unknown-field", LLAMA3, ["gpus=1"], "gpus: Extra inputs are not permitted"),
    ("unknown-nested-field", LLAMA3, ["vllm.tensor_paralel_size=1"], "vllm.tensor_paralel_size: Extra inputs"),
    ("latest-tag", LLAMA3, ["image.tag=latest"], "image.tag: 'latest' is not a pinned version"),
    ("gpu-util-above-one", LLAMA3, ["vllm.gpu_memory_utilization=1.5"], "vllm.gpu_memory_utilization"),
    ("tp-differs-from-gpus", LLAMA3, ["vllm.tensor_parallel_size=2"],
     "vllm.tensor_parallel_size 2 must equal resources.gpus 1"),
    ("limit-below-request", LLAMA3, ["resources.memory_limit=16Gi"],
     "resources: memory_limit 16Gi is below memory_request 20Gi"),
    ("bad-quantity", LLAMA3, ["resources.memory_request=20 gigs"], "resources.memory_request"),
    ("load-exceeds-context", LLAMA3, ["load.prompt_tokens=8100"],
     "load.prompt_tokens + load.output_tokens (8228) exceed vllm.max_model_len 8192"),
    ("unknown-profile", LLAMA3, ["load.profile.kind=burst"], "load.profile"),
    ("managed-extra-arg", LLAMA3, ["vllm.extra_args=[--max-model-len=4096]"],
     "vllm.extra_args: --max-model-len=4096 is set by its own spec field"),
    ("negative-startup", LLAMA3, ["startup.timeout_s=-5"], "startup.timeout_s"),
    ("missing-slo", _without(LLAMA3, "slo"), [], "slo: Field required"),
    ("missing-tokens-floor", _without(LLAMA3, "slo.min_output_tokens_per_s"), [],
     "slo.min_output_tokens_per_s: Field required"),
    ("zero-tokens-floor", LLAMA3, ["slo.min_output_tokens_per_s=0"],
     "slo.min_output_tokens_per_s: Input should be greater than 0"),
    ("missing-rehearsal", _without(LLAMA3, "rehearsal"), [], "rehearsal: Field required"),
    ("missing-rehearsal-source", _without(LLAMA3, "rehearsal.source"), [], "rehearsal.source: Field required"),
    ("blank-rehearsal-source", LLAMA3, ["rehearsal.source='  '"],
     "rehearsal.source: must say where the latency numbers come from"),
    ("missing-rehearsal-ttft", _without(LLAMA3, "rehearsal.ttft_ms"), [], "rehearsal.ttft_ms: Field required"),
    ("zero-rehearsal-ttft", LLAMA3, ["rehearsal.ttft_ms=0"], "rehearsal.ttft_ms: Input should be greater than 0"),
    ("zero-rehearsal-itl", LLAMA3, ["rehearsal.itl_ms=0"], "rehearsal.itl_ms: Input should be greater than 0"),
    ("negative-rehearsal-std", LLAMA3, ["rehearsal.ttft_std_ms=-1"],
     "rehearsal.ttft_std_ms: Input should be greater than or equal to 0"),
    ("rehearsal-std-beyond-simulator", LLAMA3, ["rehearsal.itl_ms=20", "rehearsal.itl_std_ms=7"],
     "rehearsal: itl_std_ms 7 exceeds 30% of itl_ms 20; the simulator refuses to start with it"),
    ("warm-cache-on-emptydir", LLAMA3, ["startup.assumes_warm_cache=true"],
     "startup.assumes_warm_cache needs a persistent model_cache (pvc or existingClaim)"),
    ("existing-claim-without-name", LLAMA3, ["model_cache.kind=existingClaim"],
     "model_cache: claim_name is required with kind existingClaim"),
    ("claim-name-on-pvc", LLAMA3, ["model_cache.kind=pvc", "model_cache.claim_name=shared"],
     "model_cache: claim_name is required with kind existingClaim and applies to it only"),
    ("storage-class-on-emptydir", LLAMA3, ["model_cache.storage_class=fast"],
     "model_cache: storage_class and access_mode apply to kind pvc only, not emptyDir"),
    ("access-mode-on-existing-claim", LLAMA3, ["model_cache.kind=existingClaim", "model_cache.claim_name=c",
                                               "model_cache.access_mode=ReadWriteMany"],
     "model_cache: storage_class and access_mode apply to kind pvc only, not existingClaim"),
    ("unknown-cache-kind", LLAMA3, ["model_cache.kind=hostPath"], "model_cache.kind: Input should be"),
    ("bad-cache-size", LLAMA3, ["model_cache.size=lots"], "model_cache.size"),
    ("unknown-access-mode", LLAMA3, ["model_cache.kind=pvc", "model_cache.access_mode=ReadOnlyMany"],
     "model_cache.access_mode: Input should be"),
    ("zero-prestop", LLAMA3, ["shutdown.endpoint_removal_s=0"], "shutdown.endpoint_removal_s: Input should be"),
    ("negative-drain", LLAMA3, ["shutdown.drain_s=-1"], "shutdown.drain_s: Input should be"),
    ("runtime-class-not-dns", LLAMA3, ["scheduling.runtime_class_name=Nvidia_GPU"],
     "scheduling.runtime_class_name: String should match pattern"),
    ("unknown-scrape", LLAMA3, ["monitoring.scrape=prometheus-operator"],
     "monitoring.scrape: Input should be 'servicemonitor', 'podmonitor' or 'annotations'"),
    ("empty-prometheus-labels", LLAMA3, ["monitoring.prometheus_pod_labels={}"],
     "monitoring.prometheus_pod_labels: must name at least one label of the Prometheus pods; an empty selector "
     "admits every pod of the monitoring namespace"),
    ("zero-scrape-interval", LLAMA3, ["monitoring.interval=0s"],
     "monitoring.interval: '0s' is not a Prometheus duration above zero"),
    ("bad-scrape-interval", LLAMA3, ["monitoring.interval=30sec"],
     "monitoring.interval: '30sec' is not a Prometheus duration above zero"),
    ("monitoring-namespace-not-dns", LLAMA3, ["monitoring.namespace=Monitoring"],
     "monitoring.namespace: String should match pattern"),
    ("unknown-monitoring-field", LLAMA3, ["monitoring.enabled=true"], "monitoring.enabled: Extra inputs"),
    ("monitoring-namespace-under-network", LLAMA3, ["network.monitoring_namespace=monitoring"],
     "network.monitoring_namespace: Extra inputs are not permitted"),
    ("set-scalar-parent", LLAMA3, ["name.first=x"], "--set name.first=x: name is not a mapping"),
    ("set-without-equals", LLAMA3, ["vllm.max_model_len"], "--set vllm.max_model_len: expected KEY=VALUE"),
    ("yaml-not-mapping", ["a", "b"], [], "(top level): must be a mapping of spec fields, got list"),
    ("empty-file", None, [], "(top level): must be a mapping of spec fields, got NoneType"),
]


@pytest.mark.parametrize(("contents", "overrides", "expected"), [c[1:] for c in INVALID],
                         ids=[c[0] for c in INVALID])
def test_invalid_spec_fails_naming_the_field(tmp_path: Path, contents, overrides, expected):
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(contents) if contents is not None else "")
    with pytest.raises(SpecError) as info:
        load_spec(str(path), MODELS_DIR, overrides)
    summary = info.value.summary
    assert "\n" not in summary
    assert "broken.yaml" in summary or summary.startswith("--set"), summary
    assert expected in summary, summary


def test_yaml_syntax_error_names_the_line(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: llama3\nvllm: [unclosed\n")
    with pytest.raises(SpecError, match=r"bad.yaml: not valid YAML at line 3"):
        load_spec(str(path), MODELS_DIR)


def test_unknown_model_name_lists_the_available_ones():
    with pytest.raises(SpecError, match=r"no-such\.yaml: no such model spec .*llama3, mistral-7b"):
        load_spec("no-such", MODELS_DIR)


def test_overrides_are_yaml_typed_and_do_not_touch_the_input():
    merged = apply_overrides(LLAMA3, ["vllm.max_model_len=4096", "engine=sim", "network.router_namespace=ias"])
    assert merged["vllm"]["max_model_len"] == 4096
    assert merged["engine"] == "sim"
    assert merged["network"] == {"router_namespace": "ias"}
    assert LLAMA3["vllm"]["max_model_len"] == 8192


def test_valid_override_is_applied():
    spec = load_spec("llama3", MODELS_DIR, ["vllm.max_model_len=4096", "engine=sim"])
    assert (spec.vllm.max_model_len, spec.engine) == (4096, "sim")


@pytest.mark.parametrize(("text", "expected"), [("20Gi", 20 * 2**30), ("500M", 500 * 10**6), ("1.5Gi", 3 * 2**29)])
def test_quantity_bytes(text, expected):
    assert quantity_bytes(text) == expected


def test_rehearsal_profile_is_read_from_the_spec(tmp_path: Path):
    spec = load_spec("llama3", MODELS_DIR, ["rehearsal.itl_ms=40", "rehearsal.itl_std_ms=12"])
    assert (spec.rehearsal.itl_ms, spec.rehearsal.itl_std_ms) == (40, 12)
    path = tmp_path / "constant.yaml"
    path.write_text(yaml.safe_dump(_without(_without(LLAMA3, "rehearsal.ttft_std_ms"), "rehearsal.itl_std_ms")))
    constant = load_spec(str(path), MODELS_DIR).rehearsal
    assert (constant.ttft_std_ms, constant.itl_std_ms) == (0, 0), "an unset std-dev means constant latency"


def test_cache_shutdown_and_scheduling_default_to_todays_pod():
    spec = load_spec("llama3", MODELS_DIR)
    assert (spec.model_cache.kind, spec.model_cache.size) == ("emptyDir", "100Gi")
    assert spec.startup.assumes_warm_cache is False
    assert (spec.shutdown.endpoint_removal_s, spec.shutdown.grace_period_s) == (15, 130)
    assert (spec.scheduling.runtime_class_name, spec.scheduling.priority_class_name) == (None, None)


def test_a_warm_cache_needs_a_persistent_claim():
    spec = load_spec("llama3", MODELS_DIR, ["model_cache.kind=existingClaim", "model_cache.claim_name=hf-cache",
                                            "startup.assumes_warm_cache=true", "startup.timeout_s=300"])
    assert spec.model_cache.claim_name == "hf-cache"
    assert spec.startup.assumes_warm_cache


def test_a_spec_without_a_monitoring_section_gets_the_stated_defaults(tmp_path: Path):
    path = tmp_path / "unmonitored.yaml"
    path.write_text(yaml.safe_dump(_without(LLAMA3, "monitoring")))
    monitoring = load_spec(str(path), MODELS_DIR).monitoring
    assert monitoring.model_dump() == {"scrape": "servicemonitor", "namespace": "monitoring",
                                       "prometheus_pod_labels": {"app.kubernetes.io/name": "prometheus"},
                                       "labels": {}, "interval": "30s"}


@pytest.mark.parametrize("interval", ["30s", "1m30s", "500ms", "2h", "1d"])
def test_scrape_interval_takes_prometheus_durations(interval: str):
    assert load_spec("llama3", MODELS_DIR, [f"monitoring.interval={interval}"]).monitoring.interval == interval
