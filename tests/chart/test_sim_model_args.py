"""The rehearsal's simulated model (chat template, end-of-sequence, answer salt) reaches the stand-in.

Only the project's stand-in plays it, and the llm-d image a real cluster runs refuses flags it does not know, so
the chart carries these settings as pod annotations, never as container args; the local cluster turns them into
the stand-in's flags (vllm_gate.cluster.dataplane.sim.sim_args_from_pod), and in a container the stand-in reads them
from a downward API file the chart mounts. vLLM never gets them (its own --chat-template takes a template).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require
from vllm_gate.base.errors import RenderError
from vllm_gate.base.ports import free_port
from vllm_gate.base.tools import MODELS_DIR, require_tool
from vllm_gate.cluster.dataplane.sim import (
    STANDIN_ANNOTATIONS,
    sim_args_from_pod,
    sim_binary,
    start_process,
    stop_process,
    wait_listening,
)
from vllm_gate.deploy.render import render_manifests
from vllm_gate.deploy.values import chart_values
from vllm_gate.spec import load_spec

STANDIN_FLAGS = set(STANDIN_ANNOTATIONS.values())


@pytest.fixture(autouse=True)
def _helm():
    require("helm")


def pod_template(overrides: list[str], pod_annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """The llama3 spec's model pod template with ``overrides``."""
    spec = load_spec("llama3", MODELS_DIR, overrides)
    values = chart_values(spec)
    values["podAnnotations"] = pod_annotations or {}
    docs = render_manifests(spec, values)
    return next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]


def model_pod(overrides: list[str], pod_annotations: dict[str, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The llama3 spec's model pod with ``overrides``: its container's args and its annotations."""
    template = pod_template(overrides, pod_annotations)
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
    # What the local cluster does with a model pod: its args and annotations become the stand-in's
    # (vllm_gate.cluster.dataplane.sim).
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


# --- in a container: the annotations as a downward API file ----------------------------------------------

def downward_api_file(path: Path, annotations: dict[str, str]) -> Path:
    """Write ``annotations`` as the kubelet writes a downward API map: sorted ``key="value"`` lines, the value
    quoted in Go syntax (JSON's escapes are a subset Go's strconv.Unquote reads), no final newline."""
    path.write_text("\n".join(f"{key}={json.dumps(value, ensure_ascii=False)}"
                              for key, value in sorted(annotations.items())))
    return path


def standin_binary() -> Path:
    """The stand-in itself (sim_binary() would prefer the llm-d simulator, which has no annotations file)."""
    require("vllm-sim-standin")
    return require_tool("vllm-sim-standin")


@contextmanager
def standin(args: list[str]) -> Iterator[str]:
    """The stand-in serving with ``args`` on a free port (after the pod's --port: the last one wins); yields its
    URL. The args go to it as given, as a container's would."""
    port = free_port()
    proc = start_process(standin_binary(), [*args, "--port", str(port)], None)
    try:
        wait_listening(f"http://127.0.0.1:{port}", 15, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def chat(url: str, args: list[str], content: str = "Hi there!") -> dict[str, Any]:
    """A greedy chat completion of ``content`` (temperature 0: the answer depends only on prompt and salt)."""
    return httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
        "model": args[args.index("--served-model-name") + 1], "max_tokens": 100, "temperature": 0,
        "messages": [{"role": "user", "content": content}]}).json()


def standin_default_annotations_file() -> str:
    """The stand-in's default --pod-annotations-file, from its own --help."""
    out = subprocess.run([str(standin_binary()), "--help"], capture_output=True, text=True, timeout=30, check=True)
    line = next(line for line in out.stderr.splitlines() if line.strip().startswith("--pod-annotations-file"))
    return line.rsplit('(default "', 1)[1].split('"')[0]


def test_engine_sim_mounts_the_pods_annotations_where_the_stand_in_reads_them():
    template = pod_template(["engine=sim"])
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    (mount,) = [m for m in template["spec"]["containers"][0]["volumeMounts"] if m["name"] == "podinfo"]
    assert volumes["podinfo"]["downwardAPI"] == {
        "items": [{"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}
    assert mount["readOnly"] is True
    # The chart passes no --pod-annotations-file (the llm-d image would refuse it): the default must match.
    assert f"{mount['mountPath']}/annotations" == standin_default_annotations_file()


def test_vllm_pods_get_no_podinfo_volume():
    template = pod_template([])
    assert "podinfo" not in {v["name"] for v in template["spec"]["volumes"]}
    assert "podinfo" not in {m["name"] for m in template["spec"]["containers"][0]["volumeMounts"]}


def test_the_stand_in_in_a_container_takes_the_simulated_model_from_the_annotations_file(tmp_path):
    # What the stand-in does in a real pod: the chart's args unchanged, the annotations read from the mounted file.
    args, annotations = model_pod(["engine=sim", "rehearsal.chat_template=llama3", "rehearsal.eos_after_tokens=5"])
    assert not STANDIN_FLAGS & set(args)
    podinfo = downward_api_file(tmp_path / "annotations", annotations)
    with standin([*args, "--pod-annotations-file", str(podinfo)]) as url:
        done = chat(url, args)
    # <|begin_of_text|>, the user and assistant headers (3 each), "Hi there !", <|eot_id|>.
    assert done["usage"] == {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
    assert done["choices"][0]["finish_reason"] == "stop"


def test_flags_on_the_command_line_win_over_the_annotations_file(tmp_path):
    args, annotations = model_pod(["engine=sim", "rehearsal.chat_template=llama3", "rehearsal.eos_after_tokens=5"])
    podinfo = downward_api_file(tmp_path / "annotations", annotations)
    with standin([*args, "--pod-annotations-file", str(podinfo), "--eos-after", "2", "--chat-template", "none"]) as url:
        done = chat(url, args)
    assert done["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_the_annotations_file_is_unquoted_as_the_kubelet_quoted_it(tmp_path):
    # A salt with quotes, a backslash, a newline and non-ASCII: the file's value must reach the stand-in exactly as
    # the same value given as a flag does, or the temperature-0 answers differ.
    salt = 'vllm "0.12"\\n\nrévision=2'
    args, _ = model_pod(["engine=sim"])
    podinfo = downward_api_file(tmp_path / "annotations", {"vllm-gate/sim-answer-salt": salt, "team": 'a="b"'})
    with standin([*args, "--pod-annotations-file", str(podinfo)]) as url:
        from_file = chat(url, args)["choices"][0]["message"]["content"]
    with standin([*args, "--answer-salt", salt]) as url:
        from_flag = chat(url, args)["choices"][0]["message"]["content"]
    with standin(args) as url:
        unsalted = chat(url, args)["choices"][0]["message"]["content"]
    assert from_file == from_flag
    assert from_file != unsalted


@pytest.mark.parametrize(("content", "message"), [
    ('vllm-gate/sim-eos-after=5', "value of vllm-gate/sim-eos-after is not a quoted string"),
    ('vllm-gate/sim-eos-after="five"', 'annotation vllm-gate/sim-eos-after="five"'),
    ('vllm-gate/sim-chat-template="llama2"', '--chat-template "llama2": must be one of'),
    ('no equals sign', "line 2: want key=\"value\""),
])
def test_a_bad_annotations_file_stops_the_stand_in_naming_the_cause(tmp_path, content, message):
    podinfo = tmp_path / "annotations"
    podinfo.write_text(f'team="serving"\n{content}')
    proc = subprocess.run([str(standin_binary()), "--model", "m", "--port", str(free_port()),
                           "--pod-annotations-file", str(podinfo)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_a_named_annotations_file_that_is_missing_stops_the_stand_in(tmp_path):
    proc = subprocess.run([str(standin_binary()), "--model", "m", "--port", str(free_port()),
                           "--pod-annotations-file", str(tmp_path / "absent")], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2
    assert "no such file or directory" in proc.stderr
