"""Where the gate finds its binaries and project files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vllm_gate.base.errors import ToolMissing

PROJECT_ROOT = Path(__file__).resolve().parents[3]
CHART_DIR = PROJECT_ROOT / "charts" / "vllm"
MODELS_DIR = PROJECT_ROOT / "models"
LOADTESTS_DIR = PROJECT_ROOT / "loadtests"
REPORTS_DIR = PROJECT_ROOT / "reports"
# Where local clusters, the real node and the rehearsal registry keep their state between runs.
STATE_ROOT = Path(os.environ.get("VLLM_GATE_STATE", Path.home() / ".local" / "state" / "vllm-gate"))


def tools_dir() -> Path:
    """Return the project-local tools directory (``$VLLM_GATE_TOOLS`` or ``.tools/bin``)."""
    return Path(os.environ.get("VLLM_GATE_TOOLS", PROJECT_ROOT / ".tools" / "bin"))


def find_tool(name: str) -> Path | None:
    """Return the path of ``name`` from the tools directory, else from ``PATH``."""
    local = tools_dir() / name
    if local.exists() and os.access(local, os.X_OK):
        return local
    found = shutil.which(name)
    return Path(found) if found else None


def require_tool(name: str) -> Path:
    path = find_tool(name)
    if path is None:
        raise ToolMissing(f"{name}: not found in {tools_dir()} or PATH; run scripts/setup.sh")
    return path
