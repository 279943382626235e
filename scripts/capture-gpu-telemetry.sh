#!/usr/bin/env bash
# Capture real GPU telemetry as parser fixtures, on a GPU host: the nvidia-smi queries the gate runs in a
# model pod (src/vllm_gate/monitoring/nvidia_smi.py QUERY_FIELDS), idle, with vLLM-like preallocation
# (torch reserves a fraction of the card, as vLLM's --gpu-memory-utilization does) and under a matmul load.
#
#   scripts/capture-gpu-telemetry.sh OUT_DIR [FRACTION]
set -uo pipefail
out=${1:?usage: $0 OUT_DIR [FRACTION]}
fraction=${2:-0.9}
mkdir -p "$out"
fields=index,uuid,name,utilization.gpu,utilization.memory,memory.used,memory.total,memory.free,temperature.gpu,power.draw
query() { nvidia-smi --query-gpu="$fields" --format="$1"; }

query csv > "$out/query_idle.csv"
query csv,noheader,nounits > "$out/query_idle_nounits.csv"
nvidia-smi -q -x > "$out/nvidia-smi-q.xml"
nvidia-smi > "$out/nvidia-smi.txt"
{
  command -v nvidia-smi dcgmi nv-hostengine dcgm-exporter python3
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1
} > "$out/tools.txt" 2>&1

# Preallocation and load: one process holds FRACTION of the card and multiplies bf16 matrices.
if python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  python3 - "$fraction" > "$out/load.log" 2>&1 <<'PY' &
import sys, time, torch
fraction = float(sys.argv[1])
free, total = torch.cuda.mem_get_info()
hold = torch.empty(int(total * fraction) - (total - free) - 2**30, dtype=torch.uint8, device="cuda")
a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
print(f"holding {hold.numel() / 2**20:.0f} MiB of {total / 2**20:.0f} MiB (fraction {fraction})", flush=True)
end = time.time() + 16
while time.time() < end:
    (a @ a).sum().item()
print("done", flush=True)
PY
  load=$!
  sleep 4
  for _ in $(seq 10); do query csv,noheader,nounits; sleep 1; done > "$out/query_load_nounits.csv"
  wait "$load"
  echo "fraction=$fraction" >> "$out/load.log"
fi
ls -l "$out"
