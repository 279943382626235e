"""The real engine (vLLM 0.32.0's CPU build with the tiny Llama 3 model, as a process here) against the gate's checks
and against the stand-in simulator.

Two real servers start once for the module: one as the spec says, one planted (another model loaded, another chat
template, another context length). The checks the suites run pass on the first and fail on the second naming the
cause; the stand-in (scripts/vllm-sim) must answer in vLLM's shapes (metric families and types, /v1/models, the
order of stream chunks, error bodies), so that whatever the gate learns from it holds for vLLM.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vllm_gate.base.ports import free_port
from vllm_gate.base.tools import MODELS_DIR
from vllm_gate.checks import identity, inference, metrics, server
from vllm_gate.cluster.dataplane.sim import SimServer
from vllm_gate.cluster.dataplane.vllm_cpu import LocalEngine, engine_spec
from vllm_gate.cluster.node.vllm_image import engine_version
from vllm_gate.spec import ModelSpec, load_spec

SPEC = load_spec("llama3", MODELS_DIR)
OTHER_MODEL = "meta-llama/Meta-Llama-3-8B"  # the base model: same tokenizer, another model
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def as_deployed() -> ModelSpec:
    """The spec as the local cluster's real engine runs it (its image tag names the installed vllm-cpu)."""
    return engine_spec(SPEC, engine_version())


@pytest.fixture(scope="module")
def real(as_deployed: ModelSpec) -> Iterator[LocalEngine]:
    with LocalEngine(as_deployed, free_port(), progress=print) as engine:
        home = engine.log.parent if engine.log else None
        yield engine
    # Its caches, temporary files (vllm_dist_*) and log lived in one directory under the state root, now gone.
    assert home is not None
    assert not home.exists()


@pytest.fixture(scope="module")
def planted(as_deployed: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEngine]:
    template = tmp_path_factory.mktemp("planted") / "chatml.jinja"
    template.write_text(CHATML)
    with LocalEngine(as_deployed, free_port(), model_id=OTHER_MODEL, max_model_len=4096,
                     args=["--chat-template", str(template)], progress=print) as engine:
        yield engine


@pytest.fixture(scope="module")
def standin() -> Iterator[SimServer]:
    with SimServer(model=SPEC.model_id, served_name=SPEC.served_name, max_model_len=SPEC.vllm.max_model_len,
                   chat_template="llama3") as sim:
        yield sim


# --- the real engine passes the checks the suites run, the planted one fails them ----------------------------

def test_the_real_engine_is_the_spec_s_vllm_model_tokenizer_and_length(real: LocalEngine, as_deployed: ModelSpec):
    facts = server.ask(real.url, SPEC.served_name)
    assert facts.version == engine_version()
    assert facts.root == SPEC.model_id
    assert facts.cache["kv_cache_memory_bytes"] == str(2**30)  # VLLM_CPU_KVCACHE_SPACE=1 (GiB)
    assert server.problems(facts, as_deployed, simulated=False) == []
    measured = identity.canary_prompt_tokens(real.url, SPEC.served_name, SPEC.identity.canary)
    assert measured == SPEC.identity.canary.prompt_tokens == 33
    assert inference.served_max_model_len(real.url, SPEC.served_name) == SPEC.vllm.max_model_len
    assert metrics.family_problems(metrics.scrape(real.url)) == []
    streamed = inference.chat_stream(real.url, SPEC.served_name, max_tokens=8)
    assert streamed.completion_tokens == 8


def test_planted_faults_on_the_real_engine_fail_naming_the_cause(planted: LocalEngine, as_deployed: ModelSpec):
    facts = server.ask(planted.url, SPEC.served_name)
    found = server.problems(facts, as_deployed, simulated=False)
    assert found == [f"the server loaded {OTHER_MODEL} (/v1/models root), the spec's model is {SPEC.model_id}"]
    # The spec as written names vLLM v0.11.0's image: a 0.32.0 server is not it.
    against_spec = server.problems(facts, SPEC, simulated=False)
    assert (f"the server is vLLM {engine_version()} (/version), the image vllm/vllm-openai:v0.11.0 holds 0.11.0"
            in against_spec)
    measured = identity.canary_prompt_tokens(planted.url, SPEC.served_name, SPEC.identity.canary)
    problems = identity.canary_problems(measured, 33, "the spec pins")
    assert problems
    assert str(measured) in problems[0]
    assert "33" in problems[0]
    assert inference.served_max_model_len(planted.url, SPEC.served_name) == 4096


# --- the stand-in answers in vLLM's shapes ------------------------------------------------------------------

def _families(url: str) -> dict[str, str]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {family.name: family.type for family in text_string_to_metric_families(text)
            if family.name.startswith("vllm:")}


def test_the_stand_in_s_metric_families_are_vllm_s_with_the_same_types(real: LocalEngine, standin: SimServer):
    vllm, sim = _families(real.url), _families(standin.url)
    unknown = {name: kind for name, kind in sim.items() if name not in vllm}
    assert not unknown, f"the stand-in exposes families vLLM {engine_version()} does not: {unknown}"
    retyped = {name: (kind, vllm[name]) for name, kind in sim.items() if vllm[name] != kind}
    assert not retyped, f"stand-in type vs vLLM's: {retyped}"
    required = {name for names in metrics.REQUIRED_FAMILIES for name in names}
    assert required & set(vllm) <= set(sim), "the stand-in lacks a family the gate requires that vLLM has"


def _model_entry(url: str) -> dict[str, Any]:
    return next(m for m in inference.list_models(url) if m["id"] == SPEC.served_name)


def test_the_stand_in_s_models_entry_has_vllm_s_fields(real: LocalEngine, standin: SimServer):
    vllm, sim = _model_entry(real.url), _model_entry(standin.url)
    assert sorted(sim) == sorted(vllm)
    assert (sim["root"], sim["max_model_len"], sim["object"]) == (vllm["root"], vllm["max_model_len"], vllm["object"])


def _events(url: str) -> list[str]:
    body = {"model": SPEC.served_name, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 5,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    events: list[str] = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                events.append("[DONE]")
                continue
            chunk = json.loads(data)
            choices = chunk.get("choices") or []
            finish = any(c.get("finish_reason") for c in choices)
            events.append("usage" if not choices and chunk.get("usage") else
                          f"{inference._kind(chunk)}{'+finish' if finish else ''}")
    return events


def test_the_stand_in_streams_chunks_in_vllm_s_order(real: LocalEngine, standin: SimServer):
    vllm, sim = _events(real.url), _events(standin.url)
    assert inference.describe_events(sim) == inference.describe_events(vllm)


def _error(url: str, **overrides: Any) -> tuple[int, str, list[str]]:
    body = {"model": SPEC.served_name, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 5,
            **overrides}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    error = response.json()["error"]
    return response.status_code, error["type"], sorted(error)


@pytest.mark.parametrize("case", ["unknown model", "too many tokens"])
def test_the_stand_in_refuses_as_vllm_does(real: LocalEngine, standin: SimServer, case: str):
    overrides = {"model": "no-such-model"} if case == "unknown model" else {"max_tokens": 10 * SPEC.vllm.max_model_len}
    assert _error(standin.url, **overrides) == _error(real.url, **overrides)
