"""wait_until: done as soon as the state says so, the last state after its deadline, and what it waits for said."""

from __future__ import annotations

from vllm_gate.base.waiting import wait_until


def test_it_returns_once_done_and_says_what_it_waited_for():
    states = iter(["pod Pending", "pod Pending", None])
    said: list[tuple[str, float]] = []
    assert wait_until(lambda: next(states), 30, lambda on, elapsed: said.append((on, elapsed)), poll_s=0.01,
                      every_s=0) is None
    assert [on for on, _ in said] == ["pod Pending", "pod Pending"]


def test_after_its_deadline_it_returns_what_it_still_waited_on():
    calls = []

    def state() -> str:
        calls.append(1)
        return f"{len(calls)} tries"

    assert wait_until(state, 0.05, lambda _on, _elapsed: None, poll_s=0.01).endswith(" tries")
    assert len(calls) >= 2
