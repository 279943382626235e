"""Rehearsal latency is the spec's: what the local cluster runs answers at the spec's TTFT/ITL within 10 %.

Each spec is rendered with the real helm (engine: sim), its model container's args become simulator args
exactly as the local cluster's data plane makes them, and the spec's own load profile (only shortened)
runs against that simulator. A SLO tighter than the profile must then fail, as it would on real vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ALL_MODELS, require
from vllm_gate.base.ports import free_port
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.cluster.dataplane.sim import sim_args_from_pod, sim_binary, start_process, stop_process, wait_listening
from vllm_gate.deploy.render import render_manifests
from vllm_gate.load.local import run_load
from vllm_gate.load.samples import RequestSample
from vllm_gate.load.slo import load_stats, slo_verdict
from vllm_gate.spec import ModelSpec, load_spec

FIDELITY = 0.10  # rehearsal p50s within 10 % of the configured profile
# Only the duration is shortened; users, rate, prompt and output tokens are the spec's. 20 s gives ~40+
# requests, so the TTFT median's sampling error (~1.25 std/sqrt(n)) stays well inside 10 %.
LOAD_DURATION_S = 20.0
TIGHT = 0.8  # an SLO at 80 % of the profile is tighter than the rehearsal can meet
SIM_START_S = 15


@dataclass(frozen=True)
class Rehearsed:
    """One spec's load run against the simulator the chart configures."""

    spec: ModelSpec
    sim_args: list[str]
    samples: list[RequestSample]


def model_container_args(spec: ModelSpec) -> list[str]:
    """The first container's args in the rendered Deployment: what the data plane reads from the pod."""
    deployment = next(d for d in render_manifests(spec) if d["kind"] == "Deployment")
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])


def flag(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} should appear once in {args}"
    return args[args.index(name) + 1]


@pytest.fixture(scope="module", params=ALL_MODELS)
def rehearsed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Rehearsed:
    require("helm")
    require("vllm-sim-standin")
    spec = load_spec(request.param, MODELS_DIR, ["engine=sim"])
    port = free_port()
    sim_args = sim_args_from_pod(model_container_args(spec), port)
    workdir: Path = tmp_path_factory.mktemp(spec.name)
    proc = start_process(sim_binary(), sim_args, workdir / "sim.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_listening(url, SIM_START_S, proc)
        profile = spec.load.profile.model_copy(update={"duration_s": LOAD_DURATION_S})
        run = run_load(url, spec.served_name, spec.load.model_copy(update={"profile": profile}), workdir,
                       progress=lambda _line: None)
    finally:
        stop_process(proc)
    return Rehearsed(spec, sim_args, run.samples)


def test_simulator_gets_the_specs_latency_profile(rehearsed: Rehearsed):
    args, profile = rehearsed.sim_args, rehearsed.spec.rehearsal
    assert flag(args, "--time-to-first-token") == f"{profile.ttft_ms:g}ms"
    assert flag(args, "--inter-token-latency") == f"{profile.itl_ms:g}ms"
    assert flag(args, "--time-to-first-token-std-dev") == f"{profile.ttft_std_ms:g}ms"
    assert flag(args, "--inter-token-latency-std-dev") == f"{profile.itl_std_ms:g}ms"


def test_rehearsal_p50s_are_within_ten_percent_of_the_profile(rehearsed: Rehearsed):
    stats = load_stats(rehearsed.samples)
    profile = rehearsed.spec.rehearsal
    assert stats.errors == 0, [s.error for s in rehearsed.samples if s.error][:3]
    for name, measured, configured in (("TTFT", stats.ttft_ms[50], profile.ttft_ms),
                                       ("ITL", stats.itl_ms[50], profile.itl_ms)):
        assert abs(measured - configured) <= FIDELITY * configured, (
            f"{rehearsed.spec.name}: rehearsal {name} p50 {measured:.2f} ms is not within "
            f"{FIDELITY:.0%} of the configured {configured:g} ms")


def test_rehearsal_passes_the_specs_own_slos(rehearsed: Rehearsed):
    failed = [r.line() for r in slo_verdict(rehearsed.samples, rehearsed.spec.slo) if not r.passed]
    assert not failed, failed


def test_slo_tighter_than_the_profile_fails_in_rehearsal(rehearsed: Rehearsed):
    profile = rehearsed.spec.rehearsal
    tight = load_spec(rehearsed.spec.name, MODELS_DIR,
                      [f"slo.ttft_ms.p50={TIGHT * profile.ttft_ms:g}", f"slo.itl_ms.p50={TIGHT * profile.itl_ms:g}"])
    verdict = {r.name: r for r in slo_verdict(rehearsed.samples, tight.slo)}
    for name in ("ttft p50", "itl p50"):
        assert not verdict[name].passed, verdict[name].line()
        assert verdict[name].line().startswith(f"FAIL {name}:")
    assert verdict["error rate"].passed, "only the tightened SLOs fail"
