"""The gpu suite's judgments on real captures, and on planted faults derived from them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.monitoring.captures import capture_dir
from vllm_gate.monitoring.gpu import (
    MEMORY_ABOVE_MARGIN,
    MEMORY_BELOW_MARGIN,
    GpuReading,
    gpu_type_matches,
    identity_problems,
    memory_problems,
    utilization_problems,
    xid_problems,
)
from vllm_gate.monitoring.nvidia_smi import parse_query
from vllm_gate.monitoring.recorded import RECORDED_DIR


def _query(capture: str, state: str) -> list[GpuReading]:
    # The H100 query files come from the packaged copy (equal to the shared capture, see test_recorded), so
    # these judgments run where the shared directory is absent too.
    directory = Path(str(RECORDED_DIR)) if capture == "h100" else capture_dir(capture)
    return parse_query((directory / f"query_{state}_nounits.csv").read_text())


def test_h100_load_is_far_below_a_095_preallocation():
    """The H100 capture held ~20 GB, as an 8B model without vLLM's KV-cache preallocation would."""
    load = _query("h100", "load")
    r = load[0]
    (problem,) = memory_problems(load, 0.95)
    assert "far below" in problem
    assert "the model did not load" in problem
    assert f"{r.mem_used_mib:.0f} MiB used of {r.capacity_mib:.0f} MiB capacity" in problem
    assert f"= {r.mem_used_mib / r.capacity_mib:.3f}" in problem
    assert f"expected {0.95 - MEMORY_BELOW_MARGIN:.2f}-{min(0.95 + MEMORY_ABOVE_MARGIN, 1.95 / 2):.2f}" in problem
    assert r.uuid in problem


def test_h200_load_matches_a_09_preallocation():
    assert memory_problems(_query("h200", "load"), 0.9) == []


def test_h200_load_is_far_above_a_08_preallocation():
    load = _query("h200", "load")
    (problem,) = memory_problems(load, 0.8)
    assert "far above" in problem
    assert "another process" in problem
    assert f"{load[0].mem_used_mib:.0f} MiB used" in problem
    assert f"= {load[0].mem_used_mib / load[0].capacity_mib:.3f}" in problem


def test_far_above_still_fails_when_the_spec_asks_for_095():
    """At 0.95 the upper band stops halfway to a full card: another process holding 3 % is caught."""
    h200 = _query("h200", "load")[0]
    capacity = h200.capacity_mib
    full = replace(h200, mem_used_mib=0.98 * capacity, mem_free_mib=0.02 * capacity)
    (problem,) = memory_problems([full], 0.95)
    assert "far above" in problem
    ok = replace(h200, mem_used_mib=0.95 * capacity, mem_free_mib=0.05 * capacity)
    assert memory_problems([ok], 0.95) == []


def test_one_sample_far_above_is_flagged():
    """Another process arriving mid-run shows in one sample only; it is still flagged."""
    load = _query("h200", "load")
    extra = 0.07 * load[0].capacity_mib
    spike = replace(load[3], mem_used_mib=load[3].mem_used_mib + extra, mem_free_mib=load[3].mem_free_mib - extra)
    (problem,) = memory_problems([*load[:3], spike, *load[4:]], 0.9)
    assert "far above" in problem
    assert f"{spike.mem_used_mib:.0f} MiB used" in problem


def test_no_memory_reading_is_a_problem():
    assert memory_problems([], 0.9) == ["no GPU memory reading: cannot compare memory used with the preallocation"]


@pytest.mark.parametrize("capture", ["h100", "h200"])
def test_idle_capture_has_zero_utilization(capture: str):
    idle = _query(capture, "idle")
    (problem,) = utilization_problems(idle)
    assert idle[0].uuid in problem
    assert "0 % utilization in all 1 sample(s) under load" in problem


@pytest.mark.parametrize("capture", ["h100", "h200"])
def test_load_capture_has_utilization(capture: str):
    assert utilization_problems(_query(capture, "load")) == []


def test_no_utilization_sample_is_a_problem():
    assert utilization_problems([]) == ["no GPU utilization sample was taken under load"]


def test_planted_xid_is_named():
    load = [replace(r, xid=0.0) for r in _query("h100", "load")]
    assert xid_problems(load) == []
    load[4] = replace(load[4], xid=79.0)
    (problem,) = xid_problems(load)
    assert "XID error 79" in problem
    assert load[4].uuid in problem
    assert "GPU 0" in problem


def test_source_without_xid_is_not_evidence_of_none():
    load = _query("h100", "load")
    assert all(r.xid is None for r in load)
    (problem,) = xid_problems(load)
    assert "reports no XID" in problem
    assert load[0].uuid in problem
    assert xid_problems([]) == ["no GPU sample: XID errors not checked"]


def test_h200_is_the_wrong_type_for_an_h100_spec():
    idle = _query("h200", "idle")
    (problem,) = identity_problems(idle, 1, "h100")
    assert "'NVIDIA H200'" in problem
    assert "'h100'" in problem
    assert idle[0].uuid in problem
    assert identity_problems(idle, 1, "nvidia-h200") == []


def test_two_requested_one_gpu_seen_is_named():
    load = _query("h100", "load")
    assert identity_problems(load, 1, "NVIDIA-H100-80GB-HBM3") == []  # ten samples of one GPU count once
    (problem,) = identity_problems(load, 2, "h100")
    assert "sees 1 distinct GPU(s), it requested 2" in problem
    assert load[0].uuid in problem


def test_gpus_count_by_uuid_and_index():
    """The recorded exporter shows one card under indices 0..n-1; each index counts as one of the pod's GPUs."""
    (card,) = _query("h100", "idle")
    assert identity_problems([card, replace(card, index=1)], 2, "h100") == []
    (problem,) = identity_problems([card, replace(card, index=1)], 1, "h100")
    assert "sees 2 distinct GPU(s), it requested 1" in problem


@pytest.mark.parametrize(("gpu_type", "product", "matches"), [
    ("rtx-6000-ada", "NVIDIA RTX 6000 Ada Generation", True),
    ("h100", "NVIDIA H100 80GB HBM3", True),
    ("nvidia-h100-80gb", "NVIDIA H100 80GB HBM3", True),
    ("NVIDIA-H100-80GB-HBM3", "NVIDIA H100 80GB HBM3", True),
    ("h200", "NVIDIA H200", True),
    ("a100", "NVIDIA A100-SXM4-80GB", True),
    ("h100", "NVIDIA H200", False),
    ("h200", "NVIDIA H100 80GB HBM3", False),
    ("h100-pcie", "NVIDIA H100 80GB HBM3", False),
    ("rtx-6000-ada", "NVIDIA RTX A6000", False),
    ("l40", "NVIDIA L40S", False),
    ("", "NVIDIA H100 80GB HBM3", False),
])
def test_gpu_type_matches(gpu_type: str, product: str, matches: bool):
    assert gpu_type_matches(gpu_type, product) is matches
