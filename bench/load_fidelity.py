"""How faithfully does the load gate measure latency? Ground truth: the simulator's configured TTFT and ITL.

    .venv/bin/python bench/load_fidelity.py [--duration 20] [--concurrency 1 16 64] \\
        [--guidellm PATH_TO_guidellm --tokenizer TOKENIZER_DIR]

For each concurrency: the simulator runs with TTFT 200 ms and ITL 20 ms (max-num-seqs 256, so no
queueing), our Locust load drives streaming chats with that many users, and the measured p50/p95
TTFT and ITL are printed next to the configured values, with achieved requests/s, output tokens/s
and the CPU seconds the load generator used. With --guidellm, GuideLLM drives the same workload
(concurrent profile, same prompt/output lengths) against a fresh simulator and is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from vllm_gate.cluster.dataplane.sim import SimServer
from vllm_gate.load.local import run_load
from vllm_gate.load.slo import load_stats
from vllm_gate.spec import Load

TTFT_MS, ITL_MS = 200.0, 20.0
PROMPT_TOKENS, OUTPUT_TOKENS = 128, 64


def row(tool: str, users: int, ttft: tuple[float, float], itl: tuple[float, float], rps: float, tps: float,
        cpu_s: float, requests: int) -> str:
    def err(measured: float, truth: float) -> str:
        return f"{measured:7.1f} ({measured - truth:+6.1f} ms, {100 * (measured - truth) / truth:+5.1f}%)"

    return (f"{tool:9} {users:>4} | TTFT p50 {err(ttft[0], TTFT_MS)} p95 {err(ttft[1], TTFT_MS)} | "
            f"ITL p50 {err(itl[0], ITL_MS)} p95 {err(itl[1], ITL_MS)} | {rps:6.2f} req/s {tps:8.1f} tok/s | "
            f"{requests:5} req | load CPU {cpu_s:6.1f} s")


def sim(**kwargs: object) -> SimServer:
    return SimServer(model="bench-model", ttft_ms=TTFT_MS, itl_ms=ITL_MS, max_num_seqs=256, max_model_len=4096,
                     **kwargs)  # type: ignore[arg-type]


def ours(users: int, duration: float, workdir: Path) -> str:
    load = Load.model_validate({"profile": {"kind": "users", "users": users, "duration_s": duration},
                                "prompt_tokens": PROMPT_TOKENS, "output_tokens": OUTPUT_TOKENS})
    with sim() as server:
        run = run_load(server.url, "bench-model", load, workdir / f"ours-{users}", lambda _m: None)
    stats = load_stats(run.samples)
    return row("vllm-gate", users, (stats.ttft_ms[50], stats.ttft_ms[95]), (stats.itl_ms[50], stats.itl_ms[95]),
               stats.request_rate, stats.output_tokens_per_s, run.cpu_s, stats.requests)


def guidellm(binary: str, tokenizer: str, users: int, duration: float, workdir: Path) -> str:
    out = workdir / f"guidellm-{users}.json"
    with sim() as server:
        before = os.times()
        proc = subprocess.run([binary, "run", "--backend", f"kind=openai_http,target={server.url},model=bench-model",
                               "--profile", f"kind=concurrent,streams={users}",
                               "--constraint", f"kind=max_duration,seconds={duration:g}",
                               "--data", f"kind=synthetic_text,prompt_tokens={PROMPT_TOKENS},"
                                         f"output_tokens={OUTPUT_TOKENS}",
                               "--tokenizer", f"kind=hf_auto,model={tokenizer}",
                               "--output", f"kind=json,path={out}", "--disable-progress"],
                              capture_output=True, text=True, timeout=duration + 300, check=False,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        after = os.times()
    if proc.returncode != 0:
        return f"guidellm  {users:>4} | failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
    cpu = after.children_user - before.children_user + after.children_system - before.children_system
    m = json.loads(out.read_text())["benchmarks"][0]["metrics"]

    def pct(name: str, p: str) -> float:
        return float(m[name]["successful"]["percentiles"][p])

    return row("guidellm", users, (pct("time_to_first_token_ms", "p50"), pct("time_to_first_token_ms", "p95")),
               (pct("inter_token_latency_ms", "p50"), pct("inter_token_latency_ms", "p95")),
               float(m["requests_per_second"]["successful"]["mean"]),
               float(m["output_tokens_per_second"]["successful"]["mean"]), cpu,
               int(m["request_totals"]["successful"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--guidellm", help="path of the guidellm executable (its own venv: it needs torch)")
    parser.add_argument("--tokenizer", help="local Hugging Face tokenizer directory for GuideLLM's synthetic "
                                            "prompts (offline: no hub)")
    args = parser.parse_args()
    print(f"simulator: TTFT {TTFT_MS:.0f} ms, ITL {ITL_MS:.0f} ms; prompt {PROMPT_TOKENS}, output {OUTPUT_TOKENS} "
          f"tokens; {args.duration:.0f} s per run; {os.cpu_count()} CPUs shared by simulator and load generator")
    with tempfile.TemporaryDirectory() as tmp:
        for users in args.concurrency:
            started = time.perf_counter()
            print(ours(users, args.duration, Path(tmp)), flush=True)
            if args.guidellm:
                print(guidellm(args.guidellm, args.tokenizer, users, args.duration, Path(tmp)), flush=True)
            print(f"          ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
