"""vllm-gate render: in-process with CliRunner, and once as the real console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

from tests.conftest import require
from vllm_gate.cli.gate import main


def test_render_prints_the_manifests():
    require("helm")
    result = CliRunner().invoke(main, ["render", "llama3"])
    assert result.exit_code == 0, result.output
    kinds = [d["kind"] for d in yaml.safe_load_all(result.output) if d]
    assert kinds.count("Deployment") == 1
    assert "NetworkPolicy" in kinds


def test_render_with_override_changes_the_args():
    result = CliRunner().invoke(main, ["render", "llama3", "--set", "vllm.max_model_len=4096"])
    deployment = next(d for d in yaml.safe_load_all(result.output) if d and d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--max-model-len") + 1] == "4096"


def test_invalid_override_exits_2_with_one_line_and_no_manifest():
    result = CliRunner().invoke(main, ["render", "llama3", "--set", "service.type=NodePort"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: models/llama3.yaml (with --set service.type=NodePort): service.type: Input should be 'ClusterIP'"]


def test_unknown_model_exits_2():
    result = CliRunner().invoke(main, ["render", "no-such-model"])
    assert result.exit_code == 2
    assert "no-such-model.yaml: no such model spec" in result.output


def test_console_script_as_a_user_runs_it(tmp_path: Path):
    script = Path(sys.executable).with_name("vllm-gate")
    ok = subprocess.run([str(script), "render", "mistral-7b"], capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "mistral-7b-inference" in ok.stdout
    bad = subprocess.run([str(script), "render", "mistral-7b", "--set", "resources.gpus=0"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1
