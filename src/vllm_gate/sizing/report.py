"""A spec's sizing on GPU types as rows: the ``vllm-gate size`` table and JSON, and the guide's tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vllm_gate.sizing.fit import engine_settings, fit
from vllm_gate.sizing.gpus import GIB, GpuType
from vllm_gate.spec import ModelSpec

COLUMNS = ("gpu type", "GiB (CUDA)", "weights", "overhead", "KV cache", "KV tokens", "largest max_model_len",
           "max_model_len fits", "load requests held")


def rows(spec: ModelSpec, gpus: Sequence[GpuType]) -> list[dict[str, Any]]:
    """One record per GPU type: the estimate for the spec as it stands (bytes, tokens, whether it fits)."""
    records = []
    for gpu in gpus:
        result = fit(spec, gpu)
        est = result.estimate
        records.append({
            "gpu_type": gpu.name, "total_bytes": est.total_bytes, "total_measured": gpu.measured,
            "weights_bytes": est.weights_bytes, "overhead_bytes": est.overhead_bytes,
            "kv_cache_bytes": max(est.kv_cache_bytes, 0), "num_gpu_blocks": est.num_gpu_blocks,
            "block_size": est.block_size, "kv_cache_tokens": est.kv_cache_tokens,
            "largest_max_model_len": est.largest_max_model_len, "max_model_len": est.max_model_len,
            "fits_max_model_len": result.fits, "tokens_per_request": result.tokens_per_request,
            "concurrency": result.concurrency, "load_concurrency": result.load_concurrency,
            "load_fits": result.load_fits, "max_num_seqs": est.max_num_seqs,
            "above_max_position_embeddings": est.largest_max_model_len > result.max_position_embeddings,
        })
    return records


def header(spec: ModelSpec) -> str:
    settings = engine_settings(spec)
    return (f"{spec.name} ({spec.model_id}), gpu_memory_utilization {settings.gpu_memory_utilization}, "
            f"max_model_len {settings.max_model_len}, tensor_parallel_size {settings.tensor_parallel_size}, load "
            f"{spec.load.prompt_tokens} + {spec.load.output_tokens} tokens per request; spec's gpu_type: "
            f"{spec.resources.gpu_type}")


def cells(record: dict[str, Any]) -> list[str]:
    """A record as the table's cells (GiB with one decimal; an estimated total marked ~)."""
    def g(key: str) -> str:
        return f"{record[key] / GIB:.1f}"

    largest = f"{record['largest_max_model_len']:,}" + (" *" if record["above_max_position_embeddings"] else "")
    held = f"{record['concurrency']:,}" + ("" if record["load_fits"] else f" < {record['load_concurrency']}")
    return [record["gpu_type"], ("" if record["total_measured"] else "~") + g("total_bytes"), g("weights_bytes"),
            g("overhead_bytes"), g("kv_cache_bytes"), f"{record['kv_cache_tokens']:,}", largest,
            "yes" if record["fits_max_model_len"] else "NO", held]


def text_table(records: list[dict[str, Any]]) -> str:
    """Aligned plain-text columns."""
    table = [list(COLUMNS), *(cells(r) for r in records)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                    strict=True)))
                     for row in table)


def markdown_table(records: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in records]
    return "\n".join(lines)


LEGEND = ("GiB are 2^30 bytes per GPU; ~: the total is estimated (not read on a real card); *: above the model's "
          "max_position_embeddings (vLLM refuses such a max_model_len without VLLM_ALLOW_LONG_MAX_MODEL_LEN); "
          "'load requests held': requests of the load profile's prompt + output tokens the KV cache holds at once, "
          "'< N' where the load profile keeps N in flight.")
