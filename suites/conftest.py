"""One SLO test per limit in the spec, so the report lists each with its measured value."""

from __future__ import annotations

import pytest

from fixtures.state import GATE_RUN


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "slo_name" in metafunc.fixturenames:
        run = metafunc.config.stash.get(GATE_RUN, None)
        names = run.slo_names() if run is not None else []
        metafunc.parametrize("slo_name", names, ids=names)
