"""The first look at both CLIs: `--help` keeps each example on its own line and shows no reST markup."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from vllm_gate.cli.admin import main as ias_admin
from vllm_gate.cli.gate import main as vllm_gate

EXAMPLES = {
    "vllm-gate": (vllm_gate, ["vllm-gate render llama3", 'eval "$(vllm-gate cluster up)" && kubectl get nodes',
                              "vllm-gate cluster down"]),
    "ias-admin": (ias_admin, ["ias-admin db migrate", "ias-admin model list --json",
                              "--backend-url http://llama-3-8b-inference.ias-production.svc.cluster.local:8000 \\"]),
}


@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_help_keeps_every_example_on_its_own_line(script: str):
    command, examples = EXAMPLES[script]
    result = CliRunner().invoke(command, ["--help"], prog_name=script)
    assert result.exit_code == 0
    lines = [line.strip() for line in result.output.splitlines()]
    for example in examples:
        assert example in lines, f"{example!r} is not a line of its own in:\n{result.output}"
    assert "``" not in result.output
    assert "\b" not in result.output  # click's no-rewrap marker is consumed, never printed


@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_help_as_installed(script: str):
    """The console script exactly as README runs it, in its own process."""
    binary = Path(sys.executable).parent / script
    out = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == f"Usage: {script} [OPTIONS] COMMAND [ARGS]..."
    assert EXAMPLES[script][1][0] in [line.strip() for line in out.stdout.splitlines()]
