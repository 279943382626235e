"""Render the chart with the real helm and parse its output with a loader that refuses duplicate keys.

PyYAML's SafeLoader keeps the last of two equal keys silently; the API server's decoder may keep either or
refuse the object. A chart that writes a key twice must fail here, not somewhere on a cluster.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from vllm_gate.base.tools import CHART_DIR, require_tool

HELM_TIMEOUT_S = 120


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that raises on a mapping holding the same key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_all_strict(text: str) -> list[dict[str, Any]]:
    """Every non-empty document of ``text``; a duplicate key raises ConstructorError."""
    return [doc for doc in yaml.load_all(text, Loader=UniqueKeyLoader) if doc]


def helm(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the project's helm binary; never raises on a non-zero exit (callers assert on it)."""
    return subprocess.run([str(require_tool("helm")), *args], input=stdin, capture_output=True, text=True,
                          timeout=HELM_TIMEOUT_S, check=False)


def template(values: dict[str, Any] | None = None, *, files: tuple[Path, ...] = (), release: str = "llama3",
             namespace: str = "ias-production", kube_version: str | None = None,
             api_versions: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """``helm template`` of the chart with ``values`` (stdin) over ``files``, parsed strictly; helm errors raise.

    ``api_versions`` (``group/version/Kind``) are kinds the pretended cluster serves (.Capabilities.APIVersions).
    """
    args = ["template", release, str(CHART_DIR), "--namespace", namespace]
    for path in files:
        args += ["--values", str(path)]
    for api_version in api_versions:
        args += ["--api-versions", api_version]
    if values is not None:
        args += ["--values", "-"]
    if kube_version:
        args += ["--kube-version", kube_version]
    proc = helm(*args, stdin=yaml.safe_dump(values) if values is not None else None)
    if proc.returncode != 0:
        raise AssertionError(f"helm template failed: {proc.stderr.strip()}")
    return load_all_strict(proc.stdout)


def template_error(values: dict[str, Any]) -> str:
    """helm template's error output for values it must refuse (fails the test when helm accepts them)."""
    proc = helm("template", "llama3", str(CHART_DIR), "--values", "-", stdin=yaml.safe_dump(values))
    assert proc.returncode != 0, "helm accepted values it should refuse"
    return proc.stderr


def dry_run_notes(values: dict[str, Any], release: str = "llama3", namespace: str = "ias-production") -> str:
    """NOTES.txt as helm install prints it (a client-side dry run: a cluster serving no optional kind)."""
    proc = helm("install", release, str(CHART_DIR), "--dry-run=client", "--namespace", namespace, "--values", "-",
                stdin=yaml.safe_dump(values))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split("NOTES:\n", 1)[1]
