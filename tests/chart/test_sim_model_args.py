"""The rehearsal's simulated model (chat template, end-of-sequence, answer salt) reaches the stand-in.

Only the project's stand-in plays it, and the llm-d image a real cluster runs refuses flags it does not know, so
the chart carries these settings as pod annotations, never as container args; the local cluster turns them into
the stand-in's flags (vllm_gate.sim.sim_args_from_pod). vLLM never gets them (its own --chat-template takes a
template).
"""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import require
from vllm_gate.errors import RenderError
from vllm_gate.ports import free_port
from vllm_gate.render import render_manifests
from vllm_gate.sim import (
    STANDIN_ANNOTATIONS,
    sim_args_from_pod,
    sim_binary,
    start_process,
    stop_process,
    wait_listening,
)
from vllm_gate.spec import load_spec
from vllm_gate.tools import MODELS_DIR
from vllm_gate.values import chart_values

STANDIN_FLAGS = set(STANDIN_ANNOTATIONS.values())


@pytest.fixture(autouse=True)
def _helm():
    require("helm")


def model_pod(overrides: list[str], pod_annotations: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The llama3 spec's model pod with ``overrides``: its container's args and its annotations."""
    spec = load_spec("llama3", MODELS_DIR, overrides)
    values = chart_values(spec)
    values["podAnnotations"] = pod_annotations or {}
    docs = render_manifests(spec, values)
    template = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]
    return template["spec"]["containers"][0]["args"], template["metadata"].get("annotations", {})


def simulated_model(annotations: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in annotations.items() if key in STANDIN_ANNOTATIONS}


def test_the_rehearsals_simulated_model_travels_as_annotations():
    args, annotations = model_pod(["engine=sim", "rehearsal.chat_template=chatml", "rehearsal.eos_after_tokens=0",
                                   "rehearsal.answer_salt=vllm-0.12"])
    assert simulated_model(annotations) == {"vllm-gate/sim-chat-template": "chatml", "vllm-gate/sim-eos-after": "0",
                                            "vllm-gate/sim-answer-salt": "vllm-0.12"}
    assert not STANDIN_FLAGS & set(args), "the llm-d image refuses the stand-in's flags and would not start"


@pytest.mark.parametrize("overrides", [
    ["rehearsal.chat_template=none", "rehearsal.eos_after_tokens=24", "rehearsal.answer_salt="],
    ["rehearsal.chat_template=mistral", "rehearsal.eos_after_tokens=3", "rehearsal.answer_salt=x"],
])
def test_the_llm_d_image_gets_none_of_the_stand_ins_flags(overrides):
    args, annotations = model_pod(["engine=sim", *overrides])
    assert not STANDIN_FLAGS & set(args)
    assert set(simulated_model(annotations)) == set(STANDIN_ANNOTATIONS)


def test_pod_annotations_cannot_override_the_simulated_model():
    _, annotations = model_pod(["engine=sim", "rehearsal.answer_salt="],
                               {"vllm-gate/sim-answer-salt": "planted", "team": "serving"})
    assert annotations["vllm-gate/sim-answer-salt"] == ""
    assert annotations["team"] == "serving"


def test_vllm_never_gets_the_simulated_model():
    args, annotations = model_pod(["rehearsal.chat_template=mistral", "rehearsal.eos_after_tokens=0",
                                   "rehearsal.answer_salt=x"])
    assert not STANDIN_FLAGS & set(args)
    assert simulated_model(annotations) == {}


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
    # What the local cluster does with a model pod: its args and annotations become the stand-in's (vllm_gate.sim).
    require("vllm-sim-standin")
    args, annotations = model_pod(["engine=sim", "rehearsal.chat_template=llama3", "rehearsal.eos_after_tokens=5"])
    port = free_port()
    proc = start_process(sim_binary(), sim_args_from_pod(args, port, annotations), None)
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
