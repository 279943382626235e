"""How pytest-xdist shares tests/ between workers: the real node's tests stay together, and its mark and list agree."""

from __future__ import annotations

import pytest

from tests.scheduling import REAL_NODE_SCOPE, scope_of
from vllm_gate.base.tools import PROJECT_ROOT

CONFTEST = """
from tests.scheduling import check_marks

def pytest_collection_modifyitems(items):
    check_marks(items)
"""
INI = "[pytest]\nmarkers =\n    real_node: starts the real node\n"


def test_scopes_keep_the_real_node_together_files_whole_and_gate_runs_apart():
    assert scope_of("tests/cluster/test_real_node.py::test_x") == REAL_NODE_SCOPE
    assert scope_of("tests/load/test_incluster_load.py::test_y[a]") == REAL_NODE_SCOPE
    assert scope_of("tests/test_gate_runs.py::test_a_rehearsal_on_the_real_node_runs_its_pod_probes_service_"
                    "helm_test_and_autoscaler_for_real") == REAL_NODE_SCOPE
    assert scope_of("tests/cluster/test_local.py::test_z[p]") == "tests/cluster/test_local.py"
    assert scope_of("tests/test_gate_runs.py::test_one[x]") == "tests/test_gate_runs.py::test_one[x]"


@pytest.mark.parametrize(("path", "marked"), [("tests/cluster/test_real_node.py", False),
                                               ("tests/cluster/test_local.py", True)],
                         ids=["listed-but-unmarked", "marked-but-unlisted"])
def test_a_mark_and_a_list_that_disagree_fail_the_collection(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                             path: str, marked: bool):
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))  # this project's tests package, not the planted tests/
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    test = pytester.path / path
    test.parent.mkdir(parents=True)
    test.write_text(("import pytest\n\n@pytest.mark.real_node\n" if marked else "") + "def test_it():\n    pass\n")
    result = pytester.runpytest_subprocess("--collect-only", "-q", "-p", "no:cacheprovider", path)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*REAL_NODE_TESTS and the real_node mark disagree on {path}::test_it*"])
