"""Every file in models/ is a valid spec; nothing else lives there."""

from __future__ import annotations

import pytest
import yaml

from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.spec import load_spec


def test_models_dir_holds_only_specs():
    stray = [p.name for p in MODELS_DIR.iterdir() if p.suffix != ".yaml"]
    assert not stray, f"files in models/ that are not model specs: {stray}"


@pytest.mark.parametrize("path", sorted(MODELS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_spec_validates_and_is_named_after_its_file(path):
    spec = load_spec(str(path), MODELS_DIR)
    assert spec.name == path.stem


@pytest.mark.parametrize("path", sorted(MODELS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_spec_states_how_prometheus_scrapes_it(path):
    # Stated, not defaulted: the platform's Prometheus namespace and pod labels differ between clusters.
    stated = yaml.safe_load(path.read_text()).get("monitoring")
    assert stated is not None, f"{path.name} has no monitoring section"
    spec = load_spec(str(path), MODELS_DIR)
    assert spec.monitoring.prometheus_pod_labels == stated["prometheus_pod_labels"]
    assert spec.monitoring.namespace == stated["namespace"]


def test_llama3_spec_matches_the_platform_request():
    spec = load_spec("llama3", MODELS_DIR)
    assert spec.model_id == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert (spec.resources.gpus, spec.resources.gpu_type) == (1, "rtx-6000-ada")
    assert (spec.resources.memory_request, spec.resources.memory_limit) == ("20Gi", "24Gi")
    assert (spec.vllm.max_model_len, spec.vllm.gpu_memory_utilization, spec.vllm.tensor_parallel_size) == (
        8192, 0.95, 1)
    assert (spec.service.name, spec.namespace) == ("llama-3-8b-inference", "ias-production")
    assert spec.display_name == "Llama 3 8B Instruct"
    assert (str(spec.costs.input_per_1k), str(spec.costs.output_per_1k)) == ("0.0005", "0.0015")


def test_mistral_spec_matches_the_platform_request():
    spec = load_spec("mistral-7b", MODELS_DIR)
    assert spec.display_name == "Mistral 7B Instruct"
    assert spec.service.name == "mistral-7b-inference"
    assert (str(spec.costs.input_per_1k), str(spec.costs.output_per_1k)) == ("0.0003", "0.0009")
    # The v0.3 repository holds the weights twice; vLLM must download only the HF shards it loads.
    args = spec.vllm.extra_args
    assert args[args.index("--ignore-patterns") + 1] == "consolidated.safetensors"
    assert args[args.index("--load-format") + 1] == "safetensors"


REHEARSAL_FIDELITY = 0.10  # how far rehearsal p50s may sit from the profile (tests/load/test_rehearsal_latency.py)


@pytest.mark.parametrize("path", sorted(MODELS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_rehearsal_profile_names_its_source_and_fits_the_slos(path):
    spec = load_spec(str(path), MODELS_DIR)
    profile = spec.rehearsal
    assert "https://" in profile.source, "the source must name where its figures come from"
    # A correct server must pass in rehearsal: the expected p50s, plus the fidelity allowance, are inside.
    for expected, limit in ((profile.ttft_ms, spec.slo.ttft_ms.p50), (profile.itl_ms, spec.slo.itl_ms.p50)):
        assert limit is None or expected * (1 + REHEARSAL_FIDELITY) < limit, (expected, limit)
