"""The nightly certification workflow: valid for GitHub, and it certifies every model the way the README says."""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import shlex
import stat
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from vllm_gate.base.tools import MODELS_DIR

WORKFLOW = Path(__file__).resolve().parents[1] / ".github" / "workflows" / "nightly-certification.yml"
# Environment variables of the workflow's steps that carry a secret.
SECRET_VARS = ("GATE_KUBECONFIG", "IAS_DATABASE_URL", "VLLM_GATE_PROMETHEUS_URL", "HF_TOKEN")


def load_yaml(path: Path) -> dict[str, Any]:
    """Parse as YAML 1.2, as GitHub does: PyYAML's YAML 1.1 would read the key ``on`` as the boolean True."""
    return YAML(typ="safe", pure=True).load(path.read_text())


def write_yaml(data: dict[str, Any], path: Path) -> Path:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    with path.open("w") as out:
        yaml.dump(data, out)
    return path


def schema_errors(path: Path) -> list[str]:
    """Validate against check-jsonschema's vendored GitHub workflow schema (offline); return the errors."""
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "github-workflows.json"
    schema = json.loads(vendored.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return [message for e in validator.iter_errors(load_yaml(path)) for message in leaf_messages(e)]


def leaf_messages(error: jsonschema.ValidationError) -> list[str]:
    """The innermost causes: a job is oneOf(normal job, reusable-workflow call), whose own message names none."""
    if not error.context:
        return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"]
    return [message for sub in error.context for message in leaf_messages(sub)]


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return workflow["jobs"]["certify"]["steps"]


def step_named(workflow: dict[str, Any], prefix: str) -> dict[str, Any]:
    found = [s for s in steps(workflow) if s.get("name", "").startswith(prefix)]
    assert len(found) == 1, f"expected one step named {prefix!r}..., found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return load_yaml(WORKFLOW)


def test_workflow_validates_against_github_schema() -> None:
    assert schema_errors(WORKFLOW) == []


@pytest.mark.parametrize(("plant", "cause"), [
    (lambda w: w["jobs"]["certify"].pop("runs-on"), "'runs-on' is a required property"),
    (lambda w: w["jobs"]["certify"].update({"run-on": "ubuntu-latest"}), "'run-on' was unexpected"),
    (lambda w: w["on"].update({"nightly": None}), "'nightly' was unexpected"),
    (lambda w: w["jobs"]["certify"]["steps"][0].update({"run": "ls"}), "is valid under each of"),
], ids=["job-without-runs-on", "unknown-job-key", "unknown-trigger", "step-with-uses-and-run"])
def test_schema_rejects_planted_broken_workflow(workflow, tmp_path, plant, cause) -> None:
    broken = copy.deepcopy(workflow)
    plant(broken)
    errors = schema_errors(write_yaml(broken, tmp_path / "broken.yml"))
    assert errors, "the schema accepted a broken workflow"
    assert any(cause in e for e in errors), errors


def test_runs_nightly_and_on_demand(workflow) -> None:
    on = workflow["on"]
    assert "workflow_dispatch" in on
    assert [len(entry["cron"].split()) for entry in on["schedule"]] == [5]


def test_certifies_every_model_one_after_another(workflow) -> None:
    strategy = workflow["jobs"]["certify"]["strategy"]
    assert sorted(strategy["matrix"]["model"]) == sorted(p.stem for p in MODELS_DIR.glob("*.yaml"))
    assert strategy["fail-fast"] is False
    assert strategy["max-parallel"] == 1


def test_runs_the_gate_against_the_existing_cluster(workflow) -> None:
    certify = step_named(workflow, "Certify")
    argv = shlex.split(certify["run"])
    assert argv[:4] == [".venv/bin/python", "-m", "pytest", "suites/"]
    pairs = list(itertools.pairwise(argv))
    assert ("--cluster", "existing") in pairs
    assert ("--kubeconfig", "$KUBECONFIG_FILE") in pairs
    assert ("--model", "$MODEL") in pairs
    assert "--require-certification" in argv  # a passed rehearsal must not turn the nightly green
    assert certify["env"]["MODEL"] == "${{ matrix.model }}"
    # Never on the command line, where `ps` shows it: the gate reads both from the environment.
    assert "--database-url" not in argv
    assert "--prometheus-url" not in argv


def test_installs_with_the_readme_command(workflow) -> None:
    assert any(s.get("run", "").strip() == "scripts/setup.sh" for s in steps(workflow))


def test_uploads_reports_even_when_the_gate_fails(workflow) -> None:
    upload = next(s for s in steps(workflow) if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload.get("if") == "always()", "the report of a failed run must be uploaded too"
    assert upload["with"]["path"].rstrip("/") == "reports"
    assert "${{ matrix.model }}" in upload["with"]["name"], "artifact names must differ per matrix job"


def test_secrets_come_from_ci_secrets_as_environment(workflow) -> None:
    assert step_named(workflow, "Write the kubeconfig")["env"]["GATE_KUBECONFIG"] == "${{ secrets.GATE_KUBECONFIG }}"
    env = step_named(workflow, "Certify")["env"]
    for name in ("IAS_DATABASE_URL", "VLLM_GATE_PROMETHEUS_URL"):
        assert env[name] == f"${{{{ secrets.{name} }}}}"
    for s in steps(workflow):
        script = s.get("run", "")
        # ${{ secrets.X }} in a script is pasted into the script's text; an env variable is not.
        assert "secrets." not in script, f"step {s.get('name')!r} expands a secret in its script"
        assert "set -x" not in script
        for line in script.splitlines():
            if re.search(r"\becho\b", line):
                assert not re.search(r"\$\{?(" + "|".join(SECRET_VARS) + r")\b", line), f"echoes a secret: {line}"


def run_kubeconfig_step(workflow: dict[str, Any], tmp_path: Path, secret: str) -> subprocess.CompletedProcess[str]:
    """Run the step's script as GitHub's default shell does, with the secret in its environment."""
    script = tmp_path / "step.sh"
    script.write_text(step_named(workflow, "Write the kubeconfig")["run"])
    (tmp_path / "runner-temp").mkdir()
    env = {"PATH": os.environ["PATH"], "GATE_KUBECONFIG": secret,
           "RUNNER_TEMP": str(tmp_path / "runner-temp"), "GITHUB_ENV": str(tmp_path / "github-env")}
    return subprocess.run(["bash", "--noprofile", "--norc", "-e", str(script)], env=env, capture_output=True,
                          text=True, timeout=30, check=False)


def test_kubeconfig_is_written_private_and_never_printed(workflow, tmp_path) -> None:
    secret = "apiVersion: v1\nkind: Config\nusers:\n- name: gate\n  user:\n    token: planted-secret-token-7f3a\n"
    done = run_kubeconfig_step(workflow, tmp_path, secret)
    assert done.returncode == 0, done.stderr
    written = tmp_path / "runner-temp" / "kubeconfig"
    assert written.read_text() == secret + "\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert (tmp_path / "github-env").read_text() == f"KUBECONFIG_FILE={written}\n"
    assert "planted-secret-token-7f3a" not in done.stdout + done.stderr


def test_missing_kubeconfig_secret_fails_the_job_saying_so(workflow, tmp_path) -> None:
    done = run_kubeconfig_step(workflow, tmp_path, "")
    assert done.returncode == 2
    assert "the secret GATE_KUBECONFIG is not set" in done.stdout
    assert not (tmp_path / "runner-temp" / "kubeconfig").exists()
