"""Test via the API router: after the registry's row switched, the router serves the model by name, from the candidate.

The router is called as the platform's clients call it: by the model's registry name, with the router's key (from
``VLLM_GATE_ROUTER_KEY``, never printed). The candidate is told apart from the previous revision by the backend the
router names in its answer (``X-Router-Backend``, where the router gives one: the local stand-in does), and by the
candidate's own temperature-0 answer to the first drift prompt, recorded while it was checked directly.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from vllm_gate.base.errors import GateError
from vllm_gate.base.secret import REDACTED, Secret
from vllm_gate.spec import Drift

ROUTER_KEY_ENV = "VLLM_GATE_ROUTER_KEY"
BACKEND_HEADER = "x-router-backend"
REQUEST_TIMEOUT_S = 30.0
POLL_S = 1.0
PROGRESS_S = 5.0

Progress = Callable[[str], None]


class RouterFailed(GateError):
    """The router did not serve the model from the candidate in time."""


@dataclass(frozen=True)
class Expected:
    """How the candidate answers: its Service URL (the backend the router should name) and its own answer."""

    name: str  # the registry's name, which the router's clients send
    backend_url: str
    prompt: str
    answer: str  # the candidate's temperature-0 answer to ``prompt`` (seeded as the drift check asks)
    previous_answer: str | None = None  # the previous revision's (its identity baseline), None where unknown


def router_key() -> Secret | None:
    """The router's API key from the environment, held so that no log, repr or traceback shows it."""
    value = os.environ.get(ROUTER_KEY_ENV)
    return Secret(value) if value else None


def _headers(key: Secret | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.reveal()}"} if key else {}


def listed_models(url: str, key: Secret | None, timeout_s: float = REQUEST_TIMEOUT_S) -> list[str]:
    """The model ids the router's ``/v1/models`` lists."""
    response = httpx.get(f"{url}/v1/models", headers=_headers(key), timeout=timeout_s)
    if response.status_code != 200:
        raise GateError(f"GET {url}/v1/models answered HTTP {response.status_code}")
    return [str(m.get("id")) for m in response.json().get("data", [])]


def _request(expected: Expected, drift: Drift, *, stream: bool) -> dict[str, object]:
    body: dict[str, object] = {"model": expected.name, "messages": [{"role": "user", "content": expected.prompt}],
                               "max_tokens": drift.max_tokens, "temperature": 0, "seed": drift.seed}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def ask(url: str, key: Secret | None, expected: Expected, drift: Drift,
        timeout_s: float = REQUEST_TIMEOUT_S) -> tuple[str | None, str]:
    """One chat completion through the router: (the backend it names, the answer's text)."""
    response = httpx.post(f"{url}/v1/chat/completions", json=_request(expected, drift, stream=False),
                          headers=_headers(key), timeout=timeout_s)
    if response.status_code != 200:
        body = response.text[:200].replace(key.reveal(), REDACTED) if key else response.text[:200]  # echoed keys
        raise GateError(f"POST {url}/v1/chat/completions (model {expected.name}) answered HTTP "
                        f"{response.status_code}: {body}")
    choices = response.json().get("choices") or [{}]
    return response.headers.get(BACKEND_HEADER), str((choices[0].get("message") or {}).get("content") or "")


def ask_streamed(url: str, key: Secret | None, expected: Expected, drift: Drift,
                 timeout_s: float = REQUEST_TIMEOUT_S) -> tuple[str | None, str]:
    """The same request streamed through the router: every chunk, then ``[DONE]`` as the last event, all within
    ``timeout_s`` (a stream that trickles chunks is cut there)."""
    text, done = [], False
    deadline = time.monotonic() + timeout_s
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=_request(expected, drift, stream=True),
                      headers=_headers(key), timeout=timeout_s) as response:
        if response.status_code != 200:
            raise GateError(f"streamed POST {url}/v1/chat/completions answered HTTP {response.status_code}")
        for line in response.iter_lines():
            if time.monotonic() > deadline:
                raise GateError(f"the stream through {url} did not finish within {timeout_s:.0f} s")
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                done = True
                continue
            for choice in json.loads(data).get("choices") or []:
                text.append((choice.get("delta") or {}).get("content") or "")
        backend = response.headers.get(BACKEND_HEADER)
    if not done:
        raise GateError(f"the stream through {url} ended without data: [DONE]")
    return backend, "".join(text)


def _left(deadline: float) -> float:
    """What a request may wait: the time left to ``deadline`` (at least a second), at most REQUEST_TIMEOUT_S."""
    return max(1.0, min(REQUEST_TIMEOUT_S, deadline - time.monotonic()))


def problem(url: str, key: Secret | None, expected: Expected, drift: Drift,
            deadline: float) -> tuple[str | None, bool]:
    """Why the router does not (yet) serve the model from the candidate (None when it does), and whether it named
    the backend of every answer. Every request ends by ``deadline`` (time.monotonic())."""
    named = True
    try:
        names = listed_models(url, key, _left(deadline))
        if expected.name not in names:
            return f"its /v1/models lists {names}, not {expected.name!r}", False
        answers = (lambda: ask(url, key, expected, drift, _left(deadline)),
                   lambda: ask_streamed(url, key, expected, drift, _left(deadline)))
        for backend, text in (answer() for answer in answers):
            named = named and backend is not None
            if backend is not None and backend != expected.backend_url:
                return f"it answered from {backend}, not the candidate {expected.backend_url}", named
            if text != expected.answer:
                return f"its answer {text[:60]!r} is not the candidate's {expected.answer[:60]!r}", named
    except GateError as exc:
        return exc.summary, False
    except Exception as exc:  # whatever a router answers (a JSON list, a broken stream): not the candidate's answer
        return f"no usable answer ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})", False
    return None, named


def wait_serves_candidate(url: str, key: Secret | None, expected: Expected, drift: Drift, timeout_s: float,
                          progress: Progress, who: str = "") -> tuple[str, bool]:
    """Ask the router until it serves the model from the candidate; return how that was shown and whether it showed
    which revision answered (a backend header, or an answer the previous revision does not give), or raise
    RouterFailed.

    A router picks a changed row up after its own refresh: it is asked again every second, and the wait says every
    few seconds what it still sees. ``who`` names the router in what is said (default: its URL).
    """
    started = time.monotonic()
    said = started
    while True:
        why, named = problem(url, key, expected, drift, started + timeout_s)
        if why is None:
            break
        now = time.monotonic()
        if now - started >= timeout_s:
            raise RouterFailed(f"{who or f'the API router at {url}'} did not serve {expected.name} from the "
                               f"candidate within {timeout_s:.0f} s (promotion.router_timeout_s): {why}")
        if now - said >= PROGRESS_S:
            progress(f"vllm-gate: waiting for the API router to serve {expected.name} from the candidate "
                     f"({timeout_s - (now - started):.0f} s left): {why}")
            said = now
        time.sleep(POLL_S)
    how = ["its /v1/models lists it", "a chat completion and a streamed one answered as the candidate does"]
    if named:
        how.append(f"the router named the candidate's backend ({BACKEND_HEADER})")
    elif expected.previous_answer is not None and expected.previous_answer != expected.answer:
        how.append(f"the router names no backend ({BACKEND_HEADER}), and the previous revision answers differently")
    else:
        return (f"{who or url} serves {expected.name} by name, but which revision answered is not shown: the router "
                f"names no backend ({BACKEND_HEADER}) and the previous revision's answer is the candidate's or "
                "unknown", False)
    return (f"{who or url} serves {expected.name} from the candidate {expected.backend_url} "
            f"(after {time.monotonic() - started:.1f} s of asking): {'; '.join(how)}", True)
