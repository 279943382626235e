"""The rehearsal's simulated model (chat template, end-of-sequence, answer salt) reaches the simulator's args.

They are flags of the project's stand-in only (llm-d-inference-sim refuses them), so the chart passes each only
where it differs from the stand-in's default; vLLM never gets them (its own --chat-template takes a template).
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import require
from vllm_gate.errors import RenderError
from vllm_gate.ports import free_port
from vllm_gate.render import render_manifests
from vllm_gate.sim import sim_args_from_pod, sim_binary, start_process, stop_process, wait_listening
from vllm_gate.spec import load_spec
from vllm_gate.tools import MODELS_DIR
from vllm_gate.values import chart_values

STANDIN_FLAGS = ("--chat-template", "--eos-after", "--answer-salt")


@pytest.fixture(autouse=True)
def _helm():
    require("helm")


def pod_args(overrides: list[str]) -> list[str]:
    """The model container's args for the llama3 spec with ``overrides``."""
    docs = render_manifests(load_spec("llama3", MODELS_DIR, overrides))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def flag_values(args: list[str]) -> dict[str, str]:
    return {name: args[args.index(name) + 1] for name in STANDIN_FLAGS if name in args}


def test_the_rehearsals_simulated_model_reaches_the_simulator():
    args = pod_args(["engine=sim", "rehearsal.chat_template=chatml", "rehearsal.eos_after_tokens=0",
                     "rehearsal.answer_salt=vllm-0.12"])
    assert flag_values(args) == {"--chat-template": "chatml", "--eos-after": "0", "--answer-salt": "vllm-0.12"}


def test_the_stand_ins_defaults_are_left_out_for_the_llm_d_simulator():
    args = pod_args(["engine=sim", "rehearsal.chat_template=none", "rehearsal.eos_after_tokens=24",
                     "rehearsal.answer_salt="])
    assert flag_values(args) == {}


def test_vllm_never_gets_the_simulated_model():
    args = pod_args(["rehearsal.chat_template=mistral", "rehearsal.eos_after_tokens=0", "rehearsal.answer_salt=x"])
    assert flag_values(args) == {}


@pytest.mark.parametrize(("key", "value", "message"), [
    ("chatTemplate", "llama2", "at '/sim/chatTemplate'"),
    ("eosAfter", -1, "at '/sim/eosAfter'"),
    ("eosAfter", "0", "at '/sim/eosAfter'"),
    ("answerSalt", 3, "at '/sim/answerSalt'"),
])
def test_chart_refuses_a_bad_simulated_model(key, value, message):
    spec = load_spec("llama3", MODELS_DIR, ["engine=sim"])
    values = chart_values(spec)
    values["sim"][key] = value
    with pytest.raises(RenderError) as info:
        render_manifests(spec, values)
    assert message in str(info.value)


def test_the_local_clusters_simulator_counts_with_the_pods_template():
    # What the local cluster does with a model pod: its args become the stand-in's (vllm_gate.sim).
    require("vllm-sim-standin")
    args = pod_args(["engine=sim", "rehearsal.chat_template=llama3", "rehearsal.eos_after_tokens=5"])
    port = free_port()
    proc = start_process(sim_binary(), sim_args_from_pod(args, port), None)
    try:
        wait_listening(f"http://127.0.0.1:{port}", 15, proc)
        done = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30, json={
            "model": args[args.index("--served-model-name") + 1], "max_tokens": 100,
            "messages": [{"role": "user", "content": "Hi there!"}]}).json()
    finally:
        stop_process(proc)
    # <|begin_of_text|>, the user and assistant headers (3 each), "Hi there !", <|eot_id|>.
    assert done["usage"] == {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
    assert done["choices"][0]["finish_reason"] == "stop"
