"""The KV cache the engine reports (``vllm:cache_config_info``) against what the gate predicted for it: the sizing
estimate for the spec's model on its GPU type, or, for the local cluster's real engine, the CPU build's exact
``VLLM_CPU_KVCACHE_SPACE``. Recorded in the report and summary.json, with how far apart they are."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from vllm_gate.base.errors import GateError
from vllm_gate.checks.server import CACHE_INFO
from vllm_gate.cluster.dataplane import vllm_cpu
from vllm_gate.sizing.engine import CacheDifference, CachePrediction, compare_cache_config
from vllm_gate.sizing.fit import fit
from vllm_gate.sizing.gpus import known_gpu_type
from vllm_gate.spec import ModelSpec

# What says how big the KV cache is (the other labels echo settings): one of them must be reported to compare.
SIZE_LABELS = frozenset({"num_gpu_blocks", "kv_cache_size_tokens", "kv_cache_memory_bytes"})


@dataclass(frozen=True)
class KvCacheComparison:
    """The prediction, what the engine reported, and their difference; ``note`` says why nothing was compared."""

    prediction: CachePrediction | None
    reported: Mapping[str, str] = field(default_factory=dict)
    difference: CacheDifference | None = None
    note: str = ""

    def lines(self) -> list[str]:
        if self.prediction is None or self.difference is None:
            return [f"KV cache: {self.note}"]
        p = self.prediction
        head = (f"KV cache: predicted {p.num_gpu_blocks:,} blocks x {p.block_size} = {p.kv_cache_size_tokens:,} "
                f"tokens ({p.basis})")
        apart = [label for label in self.difference.values if self.difference.share(label) != 0]
        verdict = ("reported the same" if not apart else
                   "reported " + "; ".join(line for line in self.difference.lines()
                                           if line.split(":", 1)[0] in apart))
        return [head, f"KV cache: {verdict} ({CACHE_INFO})"]

    def summary(self) -> dict[str, object]:
        """summary.json's ``kv_cache`` object."""
        return {
            "predicted": self.prediction.summary() if self.prediction else None,
            "reported": dict(self.reported),
            "difference": ({label: self.difference.share(label) for label in self.difference.values}
                           if self.difference else None),
            "note": self.note, "lines": self.lines(),
        }


def prediction(spec: ModelSpec, stand_in_kind: str) -> CachePrediction | str:
    """What the engine answering for ``spec`` should report; a string says why there is nothing to predict."""
    if stand_in_kind == "sim":
        return ("not compared: the simulator reports its --kv-cache-size flag, not a KV cache sized for the model "
                "on a GPU")
    if stand_in_kind == "vllm-cpu":
        return vllm_cpu.kv_cache_prediction(spec)
    gpu = known_gpu_type(spec.resources.gpu_type)
    if spec.architecture is None:
        return "not compared: the spec has no architecture section to size it from"
    if gpu is None:
        return f"not compared: gpu_type {spec.resources.gpu_type} is not in the sizing table (vllm-gate size)"
    return CachePrediction.of_estimate(fit(spec, gpu).estimate, spec.vllm.gpu_memory_utilization,
                                       f"estimate for {spec.name} on {gpu.name}, vllm-gate size")


def compare(spec: ModelSpec, stand_in_kind: str, reported: Mapping[str, str]) -> KvCacheComparison:
    """Predict, then hold the engine's ``vllm:cache_config_info`` labels (``reported``) against it."""
    try:
        predicted = prediction(spec, stand_in_kind)
    except GateError as exc:
        return KvCacheComparison(None, reported, note=f"not compared: no prediction ({exc.summary})")
    except (OSError, KeyError, ValueError) as exc:  # the tiny model's config.json unreadable or without a field
        return KvCacheComparison(None, reported, note=f"not compared: no prediction ({type(exc).__name__}: {exc})")
    if isinstance(predicted, str):
        return KvCacheComparison(None, reported, note=predicted)
    if not reported:
        return KvCacheComparison(predicted, reported, note=f"not compared: the server serves no {CACHE_INFO}")
    try:
        difference = compare_cache_config(predicted, reported)
    except ValueError as exc:
        return KvCacheComparison(predicted, reported, note=f"not compared: {exc}")
    if not SIZE_LABELS & set(difference.values):  # block size and utilization only echo the engine's settings
        return KvCacheComparison(predicted, reported, note=f"not compared: {CACHE_INFO} gives no size "
                                                           f"({', '.join(sorted(SIZE_LABELS))} absent or None)")
    return KvCacheComparison(predicted, reported, difference)
