"""Endpoint checks against an OpenAI-compatible vLLM server: health, models, chat, streaming."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from vllm_gate.base.errors import EndpointError
from vllm_gate.base.secret import redact_url

REQUEST_TIMEOUT_S = 30
# A port where nothing listens refuses at once: give it this long (a server restarting its listener), not the whole
# wait for a server that is up but still loading.
REFUSED_GIVE_UP_S = 15
PROGRESS_EVERY_S = 10
PROMPT = "Reply with a short greeting."


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class StreamedCompletion(Completion):
    chunks: int  # JSON chunks, [DONE] not counted
    ttft_s: float  # to the first chunk carrying content, not the role-only chunk
    content_chunks: int
    events: tuple[str, ...]  # the kinds in arrival order (see stream_problem)


def _client(url: str) -> openai.OpenAI:
    # vLLM needs no key unless started with --api-key; the client insists on one.
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=REQUEST_TIMEOUT_S, max_retries=0)


def _health_state(url: str) -> tuple[str | None, bool]:
    """Return None when healthy, else what is wrong (one phrase); and whether the connection was refused."""
    try:
        health = httpx.get(f"{url}/health", timeout=5)
        if health.status_code != 200:
            return f"/health answered {health.status_code}", False
        # The simulator answers 503 on /health/ready while starting; vLLM has no such path (404).
        ready = httpx.get(f"{url}/health/ready", timeout=5)
        if ready.status_code == 503:
            return "/health/ready answered 503 (still starting)", False
    except httpx.ConnectError as exc:
        refused = "refused" in str(exc).lower()
        return f"{'connection refused' if refused else 'no answer'} ({type(exc).__name__})", refused
    except httpx.TransportError as exc:
        return f"no answer ({type(exc).__name__})", False
    return None, False


def wait_healthy(url: str, served_name: str, timeout_s: float, progress: Callable[[str], None] = lambda _m: None,
                 *, refused_s: float | None = None) -> None:
    """Wait until the server is healthy, then check it serves ``served_name``; say every PROGRESS_EVERY_S what it
    waits for (the URL redacted).

    A healthy server that lists other names fails at once: waiting longer will not rename its model. With
    ``refused_s`` (a URL the user gave: REFUSED_GIVE_UP_S), connections refused that long in a row fail too: nothing
    listens there; a server that accepts but is not healthy yet keeps the whole wait. Without it (a port-forward
    restarting, a Service without ready endpoints yet) refusals are waited out.
    """
    shown = redact_url(url)
    started = time.monotonic()
    deadline, said, refused_since = started + timeout_s, started, None
    problem: str | None = "not tried"
    while time.monotonic() < deadline:
        problem, refused = _health_state(url)
        if problem is None:
            names = [m["id"] for m in list_models(url)]
            if served_name not in names:
                raise EndpointError(f"server at {url} is healthy but /v1/models lists {names}, not {served_name!r}")
            return
        now = time.monotonic()
        refused_since = (refused_since or now) if refused else None
        if refused_s is not None and refused_since is not None and now - refused_since >= refused_s:
            raise EndpointError(f"nothing listens at {shown}: connection refused for {now - refused_since:.0f} s")
        if now - said >= PROGRESS_EVERY_S:
            said = now
            progress(f"waiting for {shown} to be healthy: {problem} ({now - started:.0f} of {timeout_s:.0f} s)")
        time.sleep(0.5)
    raise EndpointError(f"server at {url} not healthy within {timeout_s:.0f} s: {problem}")


def health_status(url: str) -> int:
    return httpx.get(f"{url}/health", timeout=REQUEST_TIMEOUT_S).status_code


def list_models(url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/v1/models", timeout=REQUEST_TIMEOUT_S)
    if response.status_code != 200:
        raise EndpointError(f"GET {url}/v1/models answered {response.status_code}", response.text[:500])
    return list(response.json().get("data", []))


def served_max_model_len(url: str, served_name: str) -> int | None:
    for model in list_models(url):
        if model.get("id") == served_name:
            value = model.get("max_model_len")
            return int(value) if value is not None else None
    raise EndpointError(f"/v1/models at {url} does not list {served_name!r}")


def _api_error(what: str, exc: openai.APIError) -> EndpointError:
    status = getattr(exc, "status_code", None)
    return EndpointError(f"{what}: {'HTTP ' + str(status) if status else type(exc).__name__}: {exc.message}")


def chat(url: str, model: str, max_tokens: int = 16, *, messages: list[dict[str, str]] | None = None,
         temperature: float | None = None, seed: int | None = None) -> Completion:
    """One non-streamed chat completion (by default one short user prompt, the server's sampling defaults)."""
    sampling: dict[str, Any] = {k: v for k, v in (("temperature", temperature), ("seed", seed)) if v is not None}
    try:
        resp = _client(url).chat.completions.create(
            model=model, messages=messages or [{"role": "user", "content": PROMPT}], max_tokens=max_tokens,
            **sampling)
    except openai.APIError as exc:
        raise _api_error(f"chat completion for {model!r} at {url}", exc) from None
    choice = resp.choices[0]
    usage = resp.usage
    return Completion(choice.message.content or "", choice.finish_reason,
                      usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)


# Kinds of server-sent events in a streamed chat completion, as chat_stream records them.
# A bare chunk has no content, role or usage (a finish_reason alone, say).
ROLE, CONTENT, USAGE, BARE, DONE = "role", "content", "usage", "bare", "[DONE]"


def _kind(chunk: dict[str, Any]) -> str:
    """Classify one chunk: content wins over role (a first chunk may carry both), usage only when alone."""
    deltas = [choice.get("delta") or {} for choice in chunk.get("choices") or []]
    if any(delta.get("content") for delta in deltas):
        return CONTENT
    if chunk.get("usage"):
        return USAGE
    if any(delta.get("role") for delta in deltas):
        return ROLE
    return BARE


def describe_events(events: list[str]) -> str:
    """Run-length summary of an event sequence, e.g. ``role, content x3, usage, [DONE]``."""
    runs: list[tuple[str, int]] = []
    for kind in events:
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1] + 1)
        else:
            runs.append((kind, 1))
    return ", ".join(kind if n == 1 else f"{kind} x{n}" for kind, n in runs) or "no event"


def _chunk_list(kinds: list[str]) -> str:
    """``a role chunk and a usage chunk``: each kind once, in order of arrival."""
    named = [f"a {kind} chunk" for kind in dict.fromkeys(kinds)]
    return " and ".join([", ".join(named[:-1]), named[-1]] if len(named) > 1 else named)


def stream_problem(events: list[str]) -> str | None:
    """Return what a chat stream lacks or has out of order, or None for content, then usage, then ``[DONE]``."""
    seen = describe_events(events)
    chunks = [kind for kind in events if kind != DONE]
    if not chunks:
        return f"stream had no chunk at all ({seen})"
    if CONTENT not in chunks:
        return f"stream had {_chunk_list(chunks)} but no content chunk ({seen})"
    last_content = len(events) - 1 - events[::-1].index(CONTENT)
    if USAGE not in events:
        return f"stream had no usage chunk though stream_options.include_usage was set ({seen})"
    if USAGE not in events[last_content:]:
        return f"stream sent its usage chunk before the last content chunk ({seen})"
    if DONE not in events:
        return f"stream ended without data: [DONE] ({seen})"
    if events.index(DONE) != len(events) - 1:
        return f"stream went on after data: [DONE] ({seen})"
    return None


def _sse_data(lines: Iterator[str]) -> Iterator[str]:
    """Yield the ``data:`` payload of each server-sent event (multi-line data joined by newlines)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield "\n".join(data)


@dataclass
class _StreamLog:
    """What a stream delivered so far, event by event."""

    started: float
    events: list[str] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    finish: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    ttft_s: float | None = None

    def add(self, data: str, what: str) -> None:
        if data.strip() == DONE:
            self.events.append(DONE)
            return
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise EndpointError(f"{what}: an event is not JSON", data[:500]) from None
        if "error" in chunk:  # vLLM reports a failure mid-stream as an event
            raise EndpointError(f"{what}: the stream reported an error", json.dumps(chunk["error"])[:500])
        kind = _kind(chunk)
        self.events.append(kind)
        if kind == CONTENT and self.ttft_s is None:
            self.ttft_s = time.perf_counter() - self.started
        self.usage = chunk.get("usage") or self.usage
        for choice in chunk.get("choices") or []:
            self.parts.append((choice.get("delta") or {}).get("content") or "")
            self.finish = choice.get("finish_reason") or self.finish


def _error_message(body: bytes) -> str:
    """The message of an OpenAI-style error body, else the body's start."""
    text = body.decode(errors="replace")
    try:
        error = json.loads(text)
    except json.JSONDecodeError:
        return text[:200]
    error = error.get("error", error) if isinstance(error, dict) else error
    return str(error.get("message", error) if isinstance(error, dict) else error)[:200]


def chat_stream(url: str, model: str, max_tokens: int = 16) -> StreamedCompletion:
    """One streamed chat completion, read as raw server-sent events so that ``[DONE]`` is seen.

    The stream must carry content, then a usage chunk, then ``data: [DONE]`` as its last event.
    """
    what = f"streamed chat completion for {model!r} at {url}"
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}}
    log = _StreamLog(time.perf_counter())
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=REQUEST_TIMEOUT_S) as response:
            if response.status_code != 200:
                raise EndpointError(f"{what}: HTTP {response.status_code}: {_error_message(response.read())}")
            for data in _sse_data(response.iter_lines()):
                log.add(data, what)
    except httpx.TransportError as exc:
        raise EndpointError(f"{what}: broke off ({type(exc).__name__}) after {describe_events(log.events)}") from None
    problem = stream_problem(log.events)
    if problem is not None:
        raise EndpointError(f"{what}: {problem}")
    assert log.ttft_s is not None  # stream_problem found a content chunk
    return StreamedCompletion("".join(log.parts), log.finish, int(log.usage.get("prompt_tokens", 0)),
                              int(log.usage.get("completion_tokens", 0)), chunks=len(log.events) - 1,
                              ttft_s=log.ttft_s, content_chunks=log.events.count(CONTENT), events=tuple(log.events))
