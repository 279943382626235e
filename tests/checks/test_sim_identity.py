"""The simulator stand-in's simulated model, which the identity checks exercise: prompt tokens counted under a
chat template, end-of-sequence after a set length, and deterministic answers at temperature 0.

Every test runs the real stand-in binary (scripts/vllm-sim); the answers are the simulator's, not a model's.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from tests.conftest import require
from vllm_gate.base.errors import EndpointError
from vllm_gate.base.ports import free_port
from vllm_gate.cluster.dataplane.sim import (
    SimServer,
    sim_args_from_pod,
    sim_binary,
    start_process,
    stop_process,
    wait_listening,
)

MODEL = "m"
TIMEOUT_S = 30
SYSTEM_USER = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there!"}]
MULTI_TURN = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
              {"role": "user", "content": "Bye"}]
# Hand-counted: each special token is one token, each word one, each punctuation mark one. E.g. llama3 for
# SYSTEM_USER: <|begin_of_text|> + 3 headers of 3 tokens (system, user, assistant) + 2 <|eot_id|>
# + "You are terse ." (4) + "Hi there !" (3) = 1 + 9 + 2 + 7 = 19.
EXPECTED_PROMPT_TOKENS = {
    "SYSTEM_USER": {"none": 7, "llama3": 19, "mistral": 10, "chatml": 15},
    "MULTI_TURN": {"none": 4, "llama3": 20, "mistral": 10, "chatml": 15},
}
CONVERSATIONS = {"SYSTEM_USER": SYSTEM_USER, "MULTI_TURN": MULTI_TURN}


@pytest.fixture(autouse=True)
def _sim_binary():
    require("vllm-sim-standin")


def post(sim: SimServer, messages: list[dict[str, str]], **body: Any) -> dict[str, Any]:
    """One non-streamed chat completion; the JSON answer (an error body included)."""
    response = httpx.post(f"{sim.url}/v1/chat/completions", timeout=TIMEOUT_S,
                          json={"model": MODEL, "messages": messages, **body})
    return response.json()


def answer(sim: SimServer, messages: list[dict[str, str]], **body: Any) -> str:
    return post(sim, messages, **body)["choices"][0]["message"]["content"]


def post_stream(sim: SimServer, messages: list[dict[str, str]], **body: Any) -> tuple[str, str, dict[str, int]]:
    """One streamed chat completion: its text, finish reason and usage."""
    text, finish, usage = "", "", {}
    with httpx.stream("POST", f"{sim.url}/v1/chat/completions", timeout=TIMEOUT_S,
                      json={"model": MODEL, "messages": messages, "stream": True,
                            "stream_options": {"include_usage": True}, **body}) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            usage = chunk.get("usage") or usage
            for choice in chunk["choices"]:
                text += choice["delta"].get("content", "")
                finish = choice.get("finish_reason") or finish
    return text, finish, usage


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, SimServer]]:
    """One stand-in per chat template."""
    with ExitStack() as stack:
        yield {name: stack.enter_context(SimServer(model=MODEL, chat_template=name))
               for name in ("none", "llama3", "mistral", "chatml")}


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
def test_prompt_tokens_count_the_conversation_rendered_with_the_template(sims, conversation):
    counts = {name: post(sim, CONVERSATIONS[conversation], max_tokens=1)["usage"]["prompt_tokens"]
              for name, sim in sims.items()}
    assert counts == EXPECTED_PROMPT_TOKENS[conversation]
    assert len(set(counts.values())) == len(counts), "each template must give its own count"


def test_prompt_tokens_grow_with_the_text(sims):
    for sim in sims.values():
        short = post(sim, [{"role": "user", "content": "Name a color."}], max_tokens=1)["usage"]["prompt_tokens"]
        longer = post(sim, [{"role": "user", "content": "Name a color, please."}], max_tokens=1)
        assert longer["usage"]["prompt_tokens"] == short + 2  # ", please"


def test_prompt_token_metric_counts_what_usage_reports():
    with SimServer(model=MODEL, chat_template="llama3") as sim:
        post(sim, SYSTEM_USER, max_tokens=1)
        metrics = httpx.get(f"{sim.url}/metrics", timeout=TIMEOUT_S).text
    assert f'vllm:prompt_tokens_total{{model_name="{MODEL}"}} 19' in metrics


def test_context_length_check_counts_the_template():
    # "Hi there!" under llama3 is 11 tokens, without a template 3: a 20-token context fits 10 more only without.
    with SimServer(model=MODEL, max_model_len=20) as bare, \
            SimServer(model=MODEL, max_model_len=20, chat_template="llama3") as templated:
        user = [SYSTEM_USER[1]]
        assert post(bare, user, max_tokens=10)["usage"]["prompt_tokens"] == 3
        refused = post(templated, user, max_tokens=10)
    assert "maximum context length is 20 tokens" in refused["error"]["message"]
    assert "(11 in the messages, 10 in the completion)" in refused["error"]["message"]


def test_answers_stop_after_eos_after_tokens(sims):
    done = post(sims["none"], SYSTEM_USER, max_tokens=512)
    assert (done["usage"]["completion_tokens"], done["choices"][0]["finish_reason"]) == (24, "stop")
    assert len(done["choices"][0]["message"]["content"].split()) == 24
    cut = post(sims["none"], SYSTEM_USER, max_tokens=24)
    assert (cut["usage"]["completion_tokens"], cut["choices"][0]["finish_reason"]) == (24, "length")
    text, finish, usage = post_stream(sims["none"], SYSTEM_USER, max_tokens=512)
    assert (usage["completion_tokens"], finish, len(text.split())) == (24, "stop", 24)


def test_eos_after_zero_never_stops():
    with SimServer(model=MODEL, eos_after=0) as sim:
        done = post(sim, SYSTEM_USER, max_tokens=64)
        _, finish, usage = post_stream(sim, SYSTEM_USER, max_tokens=64)
    assert (done["usage"]["completion_tokens"], done["choices"][0]["finish_reason"]) == (64, "length")
    assert (usage["completion_tokens"], finish) == (64, "length")


def test_ignore_eos_gives_exactly_max_tokens(sims):
    done = post(sims["none"], SYSTEM_USER, max_tokens=100, ignore_eos=True)
    assert (done["usage"]["completion_tokens"], done["choices"][0]["finish_reason"]) == (100, "length")


def test_temperature_zero_answers_are_the_same_in_every_process():
    with SimServer(model=MODEL, chat_template="llama3") as first, \
            SimServer(model=MODEL, chat_template="llama3") as second:
        answers = [answer(sim, SYSTEM_USER, max_tokens=64, temperature=0) for sim in (first, second, first)]
        seeded = [answer(sim, SYSTEM_USER, max_tokens=64, seed=7) for sim in (first, second)]
        other_seed = answer(first, SYSTEM_USER, max_tokens=64, seed=8)
        other_prompt = answer(first, MULTI_TURN, max_tokens=64, temperature=0)
        sampled = [answer(first, SYSTEM_USER, max_tokens=64) for _ in range(2)]
    assert answers[0]
    assert answers[0] == answers[1] == answers[2]
    assert seeded[0] == seeded[1]
    assert len({answers[0], seeded[0], other_seed, other_prompt}) == 4
    assert sampled[0] != sampled[1], "requests that are neither greedy nor seeded keep random answers"


def test_another_answer_salt_changes_every_deterministic_answer():
    with SimServer(model=MODEL) as before, SimServer(model=MODEL, answer_salt="v0.12") as after:
        for conversation in CONVERSATIONS.values():
            assert answer(before, conversation, temperature=0) != answer(after, conversation, temperature=0)


def test_the_chat_template_is_part_of_the_answers_prompt(sims):
    answers = {answer(sim, SYSTEM_USER, temperature=0) for sim in sims.values()}
    assert len(answers) == len(sims)


def test_streamed_and_non_streamed_answers_agree(sims):
    for body in ({"max_tokens": 512}, {"max_tokens": 10}, {"max_tokens": 40, "ignore_eos": True}):
        done = post(sims["llama3"], SYSTEM_USER, temperature=0, **body)
        text, finish, usage = post_stream(sims["llama3"], SYSTEM_USER, temperature=0, **body)
        assert (text, finish, usage) == (done["choices"][0]["message"]["content"],
                                         done["choices"][0]["finish_reason"], done["usage"])


def test_echo_mode_repeats_the_prompt_then_answers_deterministically():
    port = free_port()
    proc = start_process(sim_binary(), ["--model", MODEL, "--mode", "echo", "--port", str(port)], None)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_listening(url, 15, proc)
        first, again = (httpx.post(f"{url}/v1/chat/completions", timeout=TIMEOUT_S, json={
            "model": MODEL, "messages": MULTI_TURN, "max_tokens": 8, "temperature": 0}).json() for _ in range(2))
    finally:
        stop_process(proc)
    assert first["choices"][0]["message"]["content"].startswith("Hi Hello. Bye ")
    assert first["choices"] == again["choices"]


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--chat-template", "llama2", '--chat-template "llama2": must be one of llama3, mistral, chatml, none'),
    ("--eos-after", "-1", "--eos-after -1: must be 0 (never) or more"),
])
def test_bad_simulated_model_flags_are_refused(flag, value, message):
    done = subprocess.run([str(sim_binary()), "--model", MODEL, flag, value], capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    assert done.returncode == 2
    assert message in done.stderr


def test_help_names_the_simulated_model_flags():
    done = subprocess.run([str(sim_binary()), "--help"], capture_output=True, text=True, timeout=TIMEOUT_S,
                          check=False)
    assert done.returncode == 0
    for flag in ("--chat-template", "--eos-after", "--answer-salt"):
        assert flag in done.stderr


def test_sim_server_passes_only_flags_away_from_the_defaults():
    # The llm-d simulator refuses the stand-in's own flags: at their defaults they are left out.
    assert not {"--chat-template", "--eos-after", "--answer-salt"} & set(SimServer(model=MODEL, port=1).args())
    args = SimServer(model=MODEL, port=1, chat_template="mistral", eos_after=0, answer_salt="s").args()
    assert args[-6:] == ["--chat-template", "mistral", "--eos-after", "0", "--answer-salt", "s"]


def test_a_pods_simulated_model_annotations_reach_the_local_simulator():
    annotations = {"vllm-gate/sim-chat-template": "chatml", "vllm-gate/sim-eos-after": "0",
                   "vllm-gate/sim-answer-salt": "x", "prometheus.io/port": "8000"}
    assert sim_args_from_pod(["--model", "m", "--port", "8000"], 9000, annotations) == [
        "--model", "m", "--chat-template", "chatml", "--eos-after", "0", "--answer-salt", "x", "--port", "9000"]


def test_the_stand_ins_defaults_from_annotations_are_left_out():
    # As in SimServer.args: a local llm-d simulator, which refuses the stand-in's flags, still starts.
    annotations = {"vllm-gate/sim-chat-template": "none", "vllm-gate/sim-eos-after": "24",
                   "vllm-gate/sim-answer-salt": ""}
    assert sim_args_from_pod(["--model", "m"], 9000, annotations) == ["--model", "m", "--port", "9000"]


def test_the_stand_ins_flags_in_a_pods_args_are_dropped():
    # Only annotations carry the simulated model; vLLM's own --chat-template names a template file.
    pod = ["--model", "m", "--chat-template", "/templates/llama3.jinja", "--eos-after", "0", "--answer-salt", "x"]
    assert sim_args_from_pod(pod, 9000) == ["--model", "m", "--port", "9000"]


def test_a_stand_in_that_refuses_its_flags_fails_to_start():
    with pytest.raises(EndpointError, match="exited with status 2"):
        SimServer(model=MODEL, eos_after=-5).start()
