"""The right model, answering sensibly: the canary's prompt-token count, stopping, and answer drift.

A different tokenizer or chat template behind the same served name changes how many tokens a fixed
conversation takes; a model without its chat template never emits its end-of-turn token and runs to
max_tokens; a changed model or engine answers fixed prompts differently at temperature 0.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from vllm_gate.base.errors import EndpointError
from vllm_gate.checks import inference
from vllm_gate.spec import Canary, Drift, Identity, Stopping

QUOTE_CHARS = 160  # of each side of the most changed answer


def fingerprint(spec: Identity, answered_by: str) -> str:
    """How the identity checks ask (canary, drift prompts, seed, limits) and what answered (a rehearsal's simulator,
    or "vllm"): a baseline compares only with a run asked the same way. The model's image is left out on purpose:
    an upgrade that changes answers is what the drift check is for."""
    asked = {"canary": [m.model_dump() for m in spec.canary.messages], "drift": spec.drift.model_dump(
        include={"prompts", "seed", "max_tokens"}), "answered_by": answered_by}
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()[:16]


def canary_prompt_tokens(url: str, model: str, canary: Canary) -> int:
    """The server's ``usage.prompt_tokens`` for the canary conversation (one token generated)."""
    messages = [m.model_dump() for m in canary.messages]
    tokens = inference.chat(url, model, max_tokens=1, messages=messages, temperature=0).prompt_tokens
    if tokens <= 0:
        raise EndpointError(f"the canary's chat completion at {url} reported no usage.prompt_tokens: nothing to "
                            "compare the tokenizer by")
    return tokens


def canary_problems(measured: int, expected: int, source: str) -> list[str]:
    """A different count means another tokenizer or chat template; ``source`` says where ``expected`` is from."""
    if measured == expected:
        return []
    return [f"the canary conversation takes {measured} prompt tokens, {source} {expected}: another tokenizer or "
            "chat template serves this model"]


@dataclass(frozen=True)
class Stopped:
    prompt: str
    finish_reason: str | None
    completion_tokens: int


def stop_answers(url: str, model: str, stopping: Stopping) -> list[Stopped]:
    """Each stopping prompt answered with a generous max_tokens and without ignore_eos."""
    results = []
    for prompt in stopping.prompts:
        done = inference.chat(url, model, max_tokens=stopping.max_tokens,
                              messages=[{"role": "user", "content": prompt}], temperature=0)
        results.append(Stopped(prompt, done.finish_reason, done.completion_tokens))
    return results


def stopping_problems(results: Sequence[Stopped], stopping: Stopping) -> list[str]:
    """Every answer ends with finish_reason stop within the bound; ``length`` means the model never stopped."""
    problems = []
    for r in results:
        if r.finish_reason == "length":
            problems.append(f"{r.prompt!r}: never stopped: finish_reason length at {r.completion_tokens} tokens "
                            f"(max_tokens {stopping.max_tokens}); a model without its chat template never emits "
                            "its end-of-turn token")
        elif r.completion_tokens <= 0:
            problems.append(f"{r.prompt!r}: no completion tokens reported (finish_reason {r.finish_reason!r}; "
                            "usage missing or an empty answer)")
        elif r.finish_reason != "stop":
            problems.append(f"{r.prompt!r}: finish_reason {r.finish_reason!r} after {r.completion_tokens} tokens")
        elif r.completion_tokens > stopping.stop_within_tokens:
            problems.append(f"{r.prompt!r}: stopped only after {r.completion_tokens} tokens "
                            f"(bound {stopping.stop_within_tokens})")
    return problems


def drift_answers(url: str, model: str, drift: Drift) -> list[tuple[str, str]]:
    """The drift prompts answered at temperature 0 with the spec's seed; an empty answer is no baseline."""
    answers = [(prompt, inference.chat(url, model, max_tokens=drift.max_tokens,
                                       messages=[{"role": "user", "content": prompt}], temperature=0,
                                       seed=drift.seed).text)
               for prompt in drift.prompts]
    if empty := [prompt for prompt, answer in answers if not answer.strip()]:
        raise EndpointError(f"empty answers at {url} to the drift prompts {', '.join(map(repr, empty))}")
    return answers


@dataclass(frozen=True)
class DriftReport:
    """How today's answers compare with the baseline's, prompt by prompt."""

    compared: int
    exact: int
    mean_similarity: float
    worst: tuple[str, str, str, float] | None  # prompt, before, now, similarity of the most changed answer
    missing: tuple[str, ...]  # baseline prompts not asked today (the spec's prompts changed)

    def line(self) -> str:
        return (f"{self.exact} of {self.compared} answers match the baseline exactly; mean similarity "
                f"{self.mean_similarity:.3f}")


def compare_answers(baseline: Sequence[tuple[str, str]], today: Sequence[tuple[str, str]]) -> DriftReport:
    """Match answers by prompt; similarity is difflib's ratio (1.0: identical text)."""
    now = dict(today)
    scored = [(prompt, before, now[prompt], difflib.SequenceMatcher(None, before, now[prompt]).ratio())
              for prompt, before in baseline if prompt in now]
    missing = tuple(prompt for prompt, _ in baseline if prompt not in now)
    if not scored:
        return DriftReport(0, 0, 0.0, None, missing)
    worst = min(scored, key=lambda s: s[3])
    exact = sum(1 for _, before, after, _ in scored if before == after)
    return DriftReport(len(scored), exact, sum(s[3] for s in scored) / len(scored), worst, missing)


def _quote(text: str) -> str:
    return repr(text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "...")


def drift_problems(report: DriftReport, drift: Drift, baseline_from: str) -> list[str]:
    """Fail below the spec's similarity threshold, quoting the most changed answer both ways."""
    if report.compared == 0:
        return [f"none of today's drift prompts is in {baseline_from} (its prompts: {', '.join(report.missing)}): "
                "nothing to compare"]
    if report.mean_similarity >= drift.min_similarity:
        return []
    assert report.worst is not None
    prompt, before, now, similarity = report.worst
    return [f"answers drifted from {baseline_from}: {report.line()}, below {drift.min_similarity}; most changed "
            f"({similarity:.3f}) {prompt!r}: was {_quote(before)}, now {_quote(now)}"]


def prompt_changes(before: list[str], now: list[str]) -> str:
    """What changed in the identity checks' drift prompts, or that they are the same (then the canary conversation,
    the seed, max_tokens or what answers changed)."""
    added = [p for p in now if p not in before]
    removed = [p for p in before if p not in now]
    if not added and not removed:
        return ("the same drift prompts; the canary conversation, the drift seed or max_tokens, or what answered "
                "changed")
    parts = [f"drift prompt {p!r} added" for p in added] + [f"drift prompt {p!r} removed" for p in removed]
    return "; ".join(parts)
