"""The library's import graph: every import runs down the layers of one gate run, and no two modules import each
other (directly or round a longer loop). Lazy imports inside functions, ``TYPE_CHECKING`` imports and
``importlib.import_module("vllm_gate...")`` count too: they are the same dependency, only deferred. (A module run
as ``python -m vllm_gate...`` in a child process is not an import: the watchdog the local cluster starts imports
the local cluster in its own process.)"""

from __future__ import annotations

import ast
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"  # this checkout's source, whatever is installed
PACKAGE = "vllm_gate"
IMPORTERS = frozenset({"import_module", "__import__"})

# Bottom to top, as README "How it is built" lists them. A module belongs to the longest prefix that names it; it
# may import its own layer and any layer before it, never one after it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("base",),
    ("spec",),
    ("sizing",),
    ("deploy",),
    ("load",),
    ("checks",),
    ("monitoring",),
    ("registry",),
    ("verdict",),
    ("cluster.base", "cluster.children", "cluster.gpu_nodes"),  # what every provider and the node share
    ("cluster.node",),
    ("cluster.dataplane",),
    ("cluster",),  # the providers: existing, kind, local, and how one is picked
    ("gate",),
    ("report",),
    ("cli",),
)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(node: ast.AST, module: str, is_package: bool, modules: set[str]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:  # relative: resolve against this module's package
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[:len(base) - node.level + 1]
            target = ".".join([*base, node.module] if node.module else base)
        else:
            target = node.module or ""
        submodules = [f"{target}.{alias.name}" for alias in node.names]
        # ``from vllm_gate.x import y`` imports the module x.y when y is one, and otherwise a name of x itself.
        yield from (name for name in submodules if name in modules)
        if not all(name in modules for name in submodules):
            yield target
    elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if called in IMPORTERS and isinstance(node.args[0].value, str):
            yield node.args[0].value


def import_edges(root: Path) -> dict[str, set[str]]:
    """Each module of the package under ``root`` -> the package's modules it imports (anywhere in its body)."""
    paths = {module_name(p, root): p for p in (root / PACKAGE).rglob("*.py")}
    assert len(paths) > 1, f"no modules of {PACKAGE} under {root}"
    edges: dict[str, set[str]] = {}
    for module, path in paths.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _imported(node, module, path.name == "__init__.py", set(paths)):
                if target in paths and target != module:
                    found.add(target)
        edges[module] = found
    return edges


def layer_of(module: str) -> int:
    inner = module.removeprefix(f"{PACKAGE}.")
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (inner == prefix or inner.startswith(f"{prefix}.")) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    if best is None:
        raise AssertionError(f"{module} is in no layer of LAYERS: add its package there and to README")
    return best[1]


def back_imports(edges: dict[str, set[str]]) -> list[str]:
    """Imports that run up a layer, one line each."""
    return sorted(f"{module} imports {target} (layer {LAYERS[layer_of(target)][0]} is above "
                  f"{LAYERS[layer_of(module)][0]})"
                  for module, targets in edges.items() if module != PACKAGE
                  for target in targets if target != PACKAGE and layer_of(target) > layer_of(module))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import loop: the strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_module_sits_in_a_layer():
    assert len(import_edges(SRC)) > 50, f"{SRC} holds too few modules: is this the checkout's src/?"
    for module in import_edges(SRC):
        if module != PACKAGE:
            layer_of(module)


def test_no_import_runs_up_a_layer():
    assert back_imports(import_edges(SRC)) == []


def test_no_two_modules_import_each_other():
    assert cycles(import_edges(SRC)) == []


@pytest.fixture
def planted_src(tmp_path: Path) -> Path:
    """Return a copy of src/ to plant imports in."""
    shutil.copytree(SRC / PACKAGE, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.json",
                                                                                     "*.xml", "*.csv", "*.sql"))
    return tmp_path


def _plant(root: Path, module: str, line: str) -> None:
    path = root / f"{module.replace('.', '/')}.py"
    path.write_text(path.read_text() + f"\n\ndef _planted() -> None:\n    {line}\n")


def test_a_planted_back_import_fails(planted_src: Path):
    # The report reading the run's state was once the other way round; a lazy import inside a function counts.
    _plant(planted_src, "vllm_gate/base/ports", "from vllm_gate.gate.run import GateRun  # noqa")
    assert back_imports(import_edges(planted_src)) == [
        "vllm_gate.base.ports imports vllm_gate.gate.run (layer gate is above base)"]


def test_a_planted_import_by_name_fails(planted_src: Path):
    _plant(planted_src, "vllm_gate/base/ports", 'importlib.import_module("vllm_gate.gate.run")  # noqa')
    assert back_imports(import_edges(planted_src)) == [
        "vllm_gate.base.ports imports vllm_gate.gate.run (layer gate is above base)"]


def test_a_planted_import_of_a_name_a_package_re_exports_fails(planted_src: Path):
    # A package __init__ that re-exports from above: importing the package is importing what it imports.
    init = planted_src / PACKAGE / "cluster" / "__init__.py"
    init.write_text(init.read_text() + "from vllm_gate.cluster.local import LocalCluster  # noqa\n")
    _plant(planted_src, "vllm_gate/cluster/node/real_node", "from vllm_gate.cluster import LocalCluster  # noqa")
    assert "vllm_gate.cluster.node.real_node imports vllm_gate.cluster (layer cluster is above cluster.node)" in (
        back_imports(import_edges(planted_src)))


def test_a_planted_relative_back_import_fails(planted_src: Path):
    _plant(planted_src, "vllm_gate/deploy/render", "from ..cluster import local  # noqa")
    assert back_imports(import_edges(planted_src)) == [
        "vllm_gate.deploy.render imports vllm_gate.cluster.local (layer cluster is above deploy)"]


def test_a_planted_cycle_in_one_layer_fails(planted_src: Path):
    # images.py and locust_image.py once imported each other (oci.py now holds what both need); within one layer
    # only the cycle check sees such a pair.
    _plant(planted_src, "vllm_gate/base/ports", "from vllm_gate.base import exits  # noqa")
    _plant(planted_src, "vllm_gate/base/exits", "from vllm_gate.base.ports import free_port  # noqa")
    assert back_imports(import_edges(planted_src)) == []
    assert cycles(import_edges(planted_src)) == [["vllm_gate.base.exits", "vllm_gate.base.ports"]]


def test_a_module_outside_every_layer_fails(planted_src: Path):
    (planted_src / PACKAGE / "stray.py").write_text('"""A module nobody placed."""\n')
    modules = [module for module in import_edges(planted_src) if module != PACKAGE]
    with pytest.raises(AssertionError, match=r"vllm_gate\.stray is in no layer"):
        [layer_of(module) for module in modules]


def test_the_readme_lists_the_layers_in_this_order():
    readme = (SRC.parent / "README.md").read_text()
    section = readme.split("## How it is built", 1)[1].split("\n## ", 1)[0]
    listed = [re.sub(r"[/`]|\.py", "", row.rsplit("|", 2)[1].strip()) for row in section.splitlines()
              if row.startswith("| ") and row.rstrip().endswith("` |")]
    expected = list(dict.fromkeys(prefix.split(".")[0] for prefixes in LAYERS for prefix in prefixes))
    assert listed == expected
