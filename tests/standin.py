"""What tests' ``--endpoint-url`` runs give the stand-in simulator so that it plays the spec's vLLM server."""

from __future__ import annotations

# GET /version as vLLM v0.11.0 (models/*.yaml's image tag) answers it: the health suite compares the two.
VLLM_VERSION = "0.11.0"
# The stand-in counts prompt tokens with a tokenizer of its own, not the model's: the canary count the specs pin
# (the real tokenizer's) is not its count, so these runs compare the canary with a baseline instead (none: skipped).
UNPINNED_CANARY = ["--set", "identity.canary.prompt_tokens=null"]
