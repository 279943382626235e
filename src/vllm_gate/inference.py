"""Endpoint checks against an OpenAI-compatible vLLM server: health, models, chat, streaming."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from vllm_gate.errors import EndpointError

REQUEST_TIMEOUT_S = 30
PROMPT = "Reply with a short greeting."


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class StreamedCompletion(Completion):
    chunks: int
    ttft_s: float  # to the first chunk carrying content, not the role-only chunk


def _client(url: str) -> openai.OpenAI:
    # vLLM needs no key unless started with --api-key; the client insists on one.
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=REQUEST_TIMEOUT_S, max_retries=0)


def _health_state(url: str) -> str | None:
    """Return None when healthy, else what is wrong (one phrase)."""
    try:
        health = httpx.get(f"{url}/health", timeout=5)
        if health.status_code != 200:
            return f"/health answered {health.status_code}"
        # The simulator answers 503 on /health/ready while starting; vLLM has no such path (404).
        ready = httpx.get(f"{url}/health/ready", timeout=5)
        if ready.status_code == 503:
            return "/health/ready answered 503 (still starting)"
    except httpx.TransportError as exc:
        return f"no answer ({type(exc).__name__})"
    return None


def wait_healthy(url: str, served_name: str, timeout_s: float) -> None:
    """Wait until the server is healthy, then check it serves ``served_name``.

    A healthy server that lists other names fails at once: waiting longer will not rename its model.
    """
    deadline = time.monotonic() + timeout_s
    problem = "not tried"
    while time.monotonic() < deadline:
        problem = _health_state(url)
        if problem is None:
            names = [m["id"] for m in list_models(url)]
            if served_name not in names:
                raise EndpointError(f"server at {url} is healthy but /v1/models lists {names}, not {served_name!r}")
            return
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


def chat(url: str, model: str, max_tokens: int = 16) -> Completion:
    """One non-streamed chat completion."""
    try:
        resp = _client(url).chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=max_tokens)
    except openai.APIError as exc:
        raise _api_error(f"chat completion for {model!r} at {url}", exc) from None
    choice = resp.choices[0]
    usage = resp.usage
    return Completion(choice.message.content or "", choice.finish_reason,
                      usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)


def chat_stream(url: str, model: str, max_tokens: int = 16) -> StreamedCompletion:
    """One streamed chat completion, with usage from the final chunk."""
    started = time.perf_counter()
    ttft = None
    parts: list[str] = []
    chunks = 0
    finish = None
    usage = None
    try:
        stream = _client(url).chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=max_tokens, stream=True,
            stream_options={"include_usage": True})
        for chunk in stream:
            chunks += 1
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta and choice.delta.content:
                    if ttft is None:
                        ttft = time.perf_counter() - started
                    parts.append(choice.delta.content)
                finish = choice.finish_reason or finish
    except openai.APIError as exc:
        raise _api_error(f"streamed chat completion for {model!r} at {url}", exc) from None
    if ttft is None:
        raise EndpointError(f"streamed chat completion for {model!r} at {url}: no chunk carried content")
    return StreamedCompletion("".join(parts), finish, usage.prompt_tokens if usage else 0,
                              usage.completion_tokens if usage else 0, chunks, ttft)
