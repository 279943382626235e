"""Shared fixtures for the library tests: real helm, real PostgreSQL, real simulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vllm_gate.pgserver import PostgresServer
from vllm_gate.spec import ModelSpec, load_spec
from vllm_gate.tools import MODELS_DIR, find_tool

ALL_MODELS = sorted(p.stem for p in MODELS_DIR.glob("*.yaml"))


def require(tool: str) -> None:
    if find_tool(tool) is None:
        pytest.fail(f"{tool} is not installed; run scripts/setup.sh (tests never skip a missing tool)")


@pytest.fixture(params=ALL_MODELS)
def spec(request: pytest.FixtureRequest) -> ModelSpec:
    """Return each spec in models/, one test per model."""
    return load_spec(request.param, MODELS_DIR)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """Return a throwaway PostgreSQL server for this test session, stopped at the end."""
    with PostgresServer() as server:
        yield server
