#!/usr/bin/env bash
# One prepared GPU check (run it on a machine with a CUDA GPU, from the repository root, after
# `pip install -e .`): the device tests (pytest -m device), the throughput benchmark at ViT-B/16 and
# demo scale, every command once on cuda at tiny settings (train-experts -> merge -> realign -> evaluate
# -> affinity on a 2-block ViT at 32 px, and bench clip8 on its ViT-Tiny-8 stand-in: the commands' device
# paths, not their speed), then the demo at GPU scale (configs/demo_gpu.yaml: 224 px, ViT-S/16, bf16).
# Each step has its own time limit (the script stays inside ~8 minutes when the steps take what they
# should). Prints figures only; every step's exit status is reported at the end. OUT (default
# runs/gpu_check) holds the demo's run folder.
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
TINY=${TINY:-$(mktemp -d /tmp/simo_gpu_check.XXXX)}
DATA=(data.size=[32,32] "data.num_samples={train: 16, val: 8, test: 8}" progress=false threads=2)
CUDA=(runtime.accelerator=cuda)
step "train-experts tiny (cuda)" 60 $PY -m simo_merge.cli train-experts "${DATA[@]}" "${CUDA[@]}" \
  "encoder.kwargs={img_size: 32, patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2}" \
  data.tasks=[semseg,depth] data.batch_size=4 pretrain.steps=2 expert.probe_steps=1 expert.finetune_steps=2 \
  output_dir="$TINY"
step "merge tsv_m (cuda, key groups)" 30 $PY -m simo_merge.cli merge pool.dir="$TINY/experts" \
  method.name=tsv_m "${CUDA[@]}" output_dir="$TINY/merge"
step "realign deep bf16 (cuda)" 45 $PY -m simo_merge.cli realign pool.dir="$TINY/experts" \
  checkpoint="$TINY/merge/merged.safetensors" "realign.realigners=[deep]" \
  "realign.params={rank: 4, steps: 5, batch_size: 4}" tsne=false \
  "${DATA[@]}" "${CUDA[@]}" runtime.precision=bf16-mixed output_dir="$TINY/realign"
step "evaluate tiny (cuda)" 30 $PY -m simo_merge.cli evaluate pool.dir="$TINY/experts" \
  checkpoint="$TINY/merge/merged.safetensors" "${DATA[@]}" "${CUDA[@]}" output="$TINY/evaluate/metrics.json"
step "affinity tiny (cuda)" 60 $PY -m simo_merge.cli affinity pool.dir="$TINY/experts" "${DATA[@]}" \
  "${CUDA[@]}" transfer_lambdas=[0.0,1.0] select_lambdas=[0.5,1.0] output_dir="$TINY/affinity"
# bench clip8 on its CPU stand-in (ViT-Tiny-8 at 32 px; the test suite's fixture writers make the folders)
$PY - "$TINY/clip8" <<'PYFIX'
import sys
from pathlib import Path
sys.path.insert(0, ".")
from tests.helpers.clip8_fixture import write_clip8_data, write_task_vectors
root = Path(sys.argv[1])
write_clip8_data(root / "data")
print("clip8 stand-in folders:", root, write_task_vectors(root / "ckpt", root / "data"))
PYFIX
step "bench clip8 stand-in (cuda)" 60 $PY -m simo_merge.cli bench clip8 --config configs/clip8_standin.yaml \
  --checkpoints "$TINY/clip8/ckpt" --data "$TINY/clip8/data" text_checkpoint="$TINY/clip8/ckpt/clip_text.safetensors" \
  "${CUDA[@]}" output_dir="$TINY/clip8/run"
OUT=${OUT:-runs/gpu_check}
step "demo at GPU scale" 240 $PY -m simo_merge.cli demo --config demo_gpu progress=false \
  output_dir="$OUT/demo_gpu"
[ -f "$OUT/demo_gpu/report.md" ] && sed -n '/^| model/,/^$/p' "$OUT/demo_gpu/report.md"
printf '%s\n' "${status[@]}"
