"""What a cluster without GPUs runs in place of each spec: the simulator, or the real engine's CPU build."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from vllm_gate.base.errors import GateError
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.cluster.base import Capabilities
from vllm_gate.cluster.node.vllm_image import engine_version
from vllm_gate.gate.plan import SIM_STARTUP_BUDGET_S, engine_specs, new_run
from vllm_gate.spec import load_spec
from vllm_gate.verdict.contract import Mode

LLAMA3 = load_spec("llama3", MODELS_DIR)
CHATML = LLAMA3.model_copy(update={"rehearsal": LLAMA3.rehearsal.model_copy(update={"chat_template": "chatml"})})


@dataclass
class NoGpus:
    """Only what engine_specs reads of a cluster: its capabilities (an existing pool's would say engine vllm)."""

    capabilities: Capabilities

    def describe(self) -> str:
        return "local (test)"


def cluster(engine: str) -> NoGpus:
    return NoGpus(Capabilities(real_gpus=False, enforces_network_policy=None, pulls_images=False, engine=engine))


def test_a_gpu_pool_runs_the_spec_as_written():
    assert engine_specs(cluster("vllm"), [LLAMA3], print) == [LLAMA3]


def test_the_simulator_gets_its_own_startup_budget_not_the_weights_download():
    (sim,) = engine_specs(cluster("sim"), [LLAMA3], print)
    assert (sim.engine, sim.startup.timeout_s) == ("sim", SIM_STARTUP_BUDGET_S)
    assert LLAMA3.startup.timeout_s == 1800


def test_the_real_engine_runs_its_image_its_limits_and_its_budget():
    (real,) = engine_specs(cluster("vllm-cpu"), [LLAMA3], print)
    image = ("vllm", "vllm-gate/vllm-cpu", f"v{engine_version()}")
    assert (real.engine, real.image.repository, real.image.tag) == image
    assert real.startup.timeout_s == 600
    assert "--enforce-eager" in real.vllm.extra_args
    assert real.slo.itl_ms == LLAMA3.rehearsal.real_engine.itl_ms  # measured for this engine, not the GPU's
    assert real.slo.max_error_rate == LLAMA3.rehearsal.real_engine.max_error_rate == 0.05


def test_a_spec_no_tiny_model_carries_gets_the_simulator_or_fails_where_the_real_engine_was_required():
    said: list[str] = []
    (sim,) = engine_specs(cluster("vllm-cpu"), [CHATML], said.append)
    assert sim.engine == "sim"
    assert said == ["vllm-gate: llama3: no tiny model carries the tokenizer of chat template 'chatml' (the real "
                    "engine has llama3, mistral): the simulator answers"]
    with pytest.raises(GateError, match="--local-engine vllm: llama3: no tiny model carries the tokenizer of chat "
                                        "template 'chatml'"):
        engine_specs(cluster("vllm-cpu"), [CHATML], said.append, real_engine_required=True)


def test_a_run_on_the_real_engine_is_a_rehearsal_and_never_certifies(tmp_path):
    local = cluster("vllm-cpu")
    (real,) = engine_specs(local, [LLAMA3], print)
    run = new_run(real, local, None, tmp_path / "r.html", None, None, compare_last=True)
    assert run.mode is Mode.REHEARSAL
    assert run.on_real_engine
    assert "identity/test_answers_stop_within_the_bound" not in run.required
    for check in run.required:
        run.record(check, "passed", "")
    run.engine_observed = True
    verdict = run.settle()
    assert not verdict.certified
    assert verdict.headline.startswith("REHEARSAL PASSED (real vLLM ")
