"""`vllm-gate size`: the table, --json and a bad --gpu-type, in-process and once as its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from vllm_gate.base.tools import PROJECT_ROOT
from vllm_gate.cli.gate import main


def test_table_lists_every_gpu_type_with_the_spec_header():
    result = CliRunner().invoke(main, ["size", "llama3"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("llama3 (meta-llama/Meta-Llama-3-8B-Instruct), gpu_memory_utilization 0.95")
    assert lines[1].split()[:2] == ["gpu", "type"]
    assert any(line.startswith("rtx-6000-ada ") and " yes " in line for line in lines)


def test_set_and_one_gpu_type_show_a_length_that_does_not_fit():
    result = CliRunner().invoke(main, ["size", "llama3", "--gpu-type", "l4", "--set", "vllm.max_model_len=131072"])
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.output.splitlines() if line.startswith("l4 ")]
    assert " NO " in row


def test_json_holds_bytes_and_tokens_per_gpu_type():
    result = CliRunner().invoke(main, ["size", "mistral-7b", "--json", "--gpu-type", "h100-sxm"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    (record,) = data["gpu_types"]
    assert record["gpu_type"] == "h100-sxm"
    assert record["kv_cache_tokens"] == record["num_gpu_blocks"] * record["block_size"]
    assert record["fits_max_model_len"] is True


def test_bad_gpu_type_is_one_line_and_exit_2():
    result = CliRunner().invoke(main, ["size", "llama3", "--gpu-type", "t4"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: --gpu-type: gpu type 't4' is not in the sizing table (known: h200, h100-sxm, h100-pcie, a100-80gb, "
        "a100-40gb, rtx-6000-ada, l40s, rtx-4090, rtx-3090, a10g, l4)"]


def test_bad_spec_override_is_exit_2():
    result = CliRunner().invoke(main, ["size", "llama3", "--set", "vllm.max_model_len=-1"])
    assert result.exit_code == 2
    assert "vllm.max_model_len" in result.output


def test_size_as_its_own_process():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "vllm_gate.cli.gate", "size", "llama3", "--json"], capture_output=True,
                         text=True, timeout=60, check=False, env=env, cwd=PROJECT_ROOT)
    assert out.returncode == 0, out.stderr
    assert {r["gpu_type"] for r in json.loads(out.stdout)["gpu_types"]} >= {"h100-sxm", "l4", "rtx-6000-ada"}
    bad = subprocess.run([sys.executable, "-m", "vllm_gate.cli.gate", "size", "llama3", "--gpu-type", "t4"],
                         capture_output=True, text=True, timeout=60, check=False, env=env, cwd=PROJECT_ROOT)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert "t4" in bad.stderr
