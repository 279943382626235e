"""The chart values of every model spec, kept in charts/vllm/ci/ for chart-testing and helm lint.

Regenerate with ``python -m tests.chart.ci_values``; tests/chart/test_ci_values.py fails when a file is stale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vllm_gate.base.tools import CHART_DIR, MODELS_DIR
from vllm_gate.deploy.values import chart_values
from vllm_gate.spec import load_spec

CI_DIR = CHART_DIR / "ci"
PREFIX = "model-"


def ci_path(model: str) -> Path:
    return CI_DIR / f"{PREFIX}{model}-values.yaml"


def expected_values() -> dict[Path, dict[str, Any]]:
    """Each model spec's chart values, by the ci/ file that must hold them."""
    return {ci_path(path.stem): chart_values(load_spec(str(path), MODELS_DIR))
            for path in sorted(MODELS_DIR.glob("*.yaml"))}


def write_all() -> None:
    """Write every model's ci/ values file."""
    for path, values in expected_values().items():
        header = (f"# Generated from models/{path.name.removeprefix(PREFIX).removesuffix('-values.yaml')}.yaml "
                  "by `python -m tests.chart.ci_values` (vllm_gate.deploy.values.chart_values); do not edit.\n")
        path.write_text(header + yaml.safe_dump(values, sort_keys=False))


if __name__ == "__main__":
    write_all()
