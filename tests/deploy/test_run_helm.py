"""A helm call that takes long says so while it waits, and is cut at its bound."""

from __future__ import annotations

import asyncio
import re

import pytest

from vllm_gate.base.errors import RenderError
from vllm_gate.deploy import render


async def _helm_that_takes(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


def test_a_long_helm_call_says_every_interval_that_it_still_waits(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(render, "HELM_PROGRESS_EVERY_S", 0.2)
    said: list[str] = []
    assert render.run_helm(_helm_that_takes(0.5), "helm uninstall llama3-abc123", said.append) == "done"
    assert said  # 0.5 s at one line per 0.2 s: at least one, whatever the scheduling
    assert all(re.fullmatch(r"helm uninstall llama3-abc123: still waiting \(\d+ s of 900 s\)", line) for line in said)
    assert render.run_helm(_helm_that_takes(0.1), "helm status x") == "done"  # no progress asked for: silent


def test_a_helm_call_past_its_bound_fails_naming_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(render, "HELM_CALL_TIMEOUT_S", 0.3)
    with pytest.raises(RenderError, match=r"helm rollback x: helm did not finish within 0\.3 s"):
        render.run_helm(_helm_that_takes(5), "helm rollback x")
