#!/usr/bin/env bash
# One prepared GPU check (run it on a machine with a CUDA GPU, from the repository root, after
# `pip install -e .`): the device tests (pytest -m device), the throughput benchmark at ViT-B/16 and
# demo scale, and the demo at GPU scale (configs/demo_gpu.yaml: 224 px, ViT-S/16, bf16), each under its
# own time limit so the whole script stays inside ~8 minutes. Prints figures only; every step's exit
# status is reported at the end. OUT (default runs/gpu_check) holds the demo's run folder.
set -u
PY=${PY:-python}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
status=()
step() {  # step <name> <seconds> <command...>
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s) ==="
  local t0=$SECONDS
  timeout "$limit" "$@"; local rc=$?
  echo "=== $name: rc=$rc in $((SECONDS - t0))s ==="
  status+=("$name rc=$rc $((SECONDS - t0))s")
}
$PY - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
PY
step "device tests" 120 $PY -m pytest -q -m device -p no:cacheprovider
step "throughput ViT-B/16 bf16" 90 $PY benchmarks/throughput.py --model vit_b16 --accelerator cuda \
  --batch 128 --precision bf16-mixed --iters 20
step "throughput ViT-B/16 fp32" 45 $PY benchmarks/throughput.py --model vit_b16 --accelerator cuda \
  --batch 128 --precision 32-true --iters 10
step "throughput demo bf16" 30 $PY benchmarks/throughput.py --accelerator cuda --batch 256 --precision bf16-mixed
OUT=${OUT:-runs/gpu_check}
step "demo at GPU scale" 240 $PY -m simo_merge.cli demo --config demo_gpu progress=false \
  output_dir="$OUT/demo_gpu"
[ -f "$OUT/demo_gpu/report.md" ] && sed -n '/^| Method/,/^$/p' "$OUT/demo_gpu/report.md"
printf '%s\n' "${status[@]}"
