#!/usr/bin/env bash
# One prepared GPU check for the machine as it will be: one CUDA GPU, Python 3.12 with torch, torchvision,
# timm, lightning, torchmetrics, h5py, safetensors, matplotlib, scikit-learn and tqdm preinstalled, and
# no network. The device machine gets the repository's working tree (tracked files and untracked ones
# that git does not ignore) plus the ignored paths a run names to carry (64 MiB in all). So: run
# `bash benchmarks/gpu_wheels.sh` where the package index is reachable (it fills the git-ignored .whl/),
# then run this script from the repository root on the device with `.whl` named as a carried path:
#   bash benchmarks/gpu_check.sh                 # install, then every step (<= 8 minutes)
#   bash benchmarks/gpu_check.sh --install-only  # the install half and its import check (dry runs)
# Install half: the wheels in .whl whose packages the interpreter lacks, and the project, go with
# `pip install --no-index --no-deps --target SITE` into a scratch folder (the project's build
# requirements, setuptools and wheel, come from .whl too). Every step then runs with PYTHONPATH=SITE:repo
# and PYTHONSAFEPATH=1, so the installed simo_merge (which maps heads/, datasets/ and configs/ in) comes
# before the source folder, and no preinstalled package is shadowed. Steps: the device tests, throughput
# at ViT-B/16 and demo scale, every command once on cuda at tiny settings (train-experts -> merge ->
# realign -> evaluate -> affinity on a 2-block ViT at 32 px: the commands' device paths, not their
# speed), TIES / TSV-M / Iso-CTS of 8 ViT-B/16-sized experts on the GPU (benchmarks/merge_methods.py),
# bench clip on its stand-in at ViT-B/32 and 224 px, then the demo at GPU scale (configs/demo_gpu.yaml).
# Each step has its own limit and the check a deadline (BUDGET seconds from the start, install included;
# default 470), so it ends inside 8 minutes; a step with no time left is reported as skipped. Ends with
# one table: step, rc, seconds, figure (the last output line holding the step's number), and exits 1
# when a step failed. OUT (default runs/gpu_check) holds the demo's run folder.
set -u
PY=${PY:-python}
WHL=${WHL:-.whl}
SITE=${SITE:-$(mktemp -d /tmp/simo_gpu_site.XXXX)}
TINY=${TINY:-$(mktemp -d /tmp/simo_gpu_check.XXXX)}
OUT=${OUT:-runs/gpu_check}
DEADLINE=$((SECONDS + ${BUDGET:-470}))
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1 MPLBACKEND=Agg
export PY WHL SITE
rows=() failed=0
step() {  # step <name> <limit s> <figure: an extended regex> <command...>
  local name=$1 limit=$2 pattern=$3 t0=$SECONDS rc figure
  shift 3
  ((DEADLINE - SECONDS < limit)) && limit=$((DEADLINE - SECONDS))
  if ((limit < 5)); then
    rows+=("| $name | skipped | 0 | no time left in the ${BUDGET:-470} s budget |")
    failed=1
    return
  fi
  echo "=== $name (limit ${limit}s) ==="
  local run=("$@")
  declare -F "$1" >/dev/null && run=(bash -c "$(declare -f "$1"); $1")  # a function of this script
  timeout -k 5 "$limit" "${run[@]}" 2>&1 | tee "$TINY/step.log"
  rc=${PIPESTATUS[0]}
  ((rc == 0)) || failed=1
  figure=$(grep -E -- "$pattern" "$TINY/step.log" | tail -n 1 | tr -s ' |' ' ' | cut -c 1-110)
  rows+=("| $name | $rc | $((SECONDS - t0)) | ${figure:-} |")
}
table() {
  printf '\n| step | rc | seconds | figure |\n|---|---|---:|---|\n'
  printf '%s\n' "${rows[@]}"
  exit "$failed"
}
install() {  # the wheels the interpreter lacks, and the project, into SITE; offline
  if [ ! -d "$WHL" ]; then
    echo "no $WHL folder: run benchmarks/gpu_wheels.sh where the index is reachable, carry .whl" >&2
    return 1
  fi
  local wheels
  mapfile -t wheels < <("$PY" - "$WHL" <<'PY'
import os
import sys
import zipfile
from importlib.metadata import PackageNotFoundError, distribution
from importlib.util import find_spec
from pathlib import Path

sys.path = [p for p in sys.path if p not in ("", os.getcwd())]  # the machine's packages, not the repo's
for whl in sorted(Path(sys.argv[1]).glob("*.whl")):
    name = whl.name.split("-")[0]
    if name in ("setuptools", "wheel"):  # the project's build requirements: --find-links serves them
        continue
    with zipfile.ZipFile(whl) as z:
        tops = {n.split("/")[0] for n in z.namelist() if n.count("/") == 1 and n.endswith("/__init__.py")}
    try:
        distribution(name)
        found = True
    except PackageNotFoundError:  # pytorch-lightning, for one, carries lightning_fabric without its metadata
        found = any(find_spec(top) is not None for top in tops)
    if found:
        print("preinstalled, left out:", whl.name, file=sys.stderr)
    else:
        print(whl)
PY
  )
  # setuptools builds in ./build, which would keep files of deleted modules from an earlier build
  rm -rf build
  "$PY" -m pip install --no-index --no-deps --find-links "$WHL" --target "$SITE" "${wheels[@]}" . &&
    rm -rf build
}
echo "scratch folder: $SITE"
step "install (.whl, offline)" 120 'Successfully installed' install
export PYTHONPATH="$SITE:$PWD" PYTHONSAFEPATH=1
step "import check" 60 '^imports ok' "$PY" -c "
import albumentations, cv2, lightning_fabric, omegaconf, open_clip, pytest, segmentation_models_pytorch
import simo_merge, simo_merge.heads, simo_merge.datasets, torch
print('imports ok: simo_merge from', simo_merge.__file__, '| torch', torch.__version__,
      '| open_clip', open_clip.__version__, '| albumentations', albumentations.__version__)"
if [ "${1:-}" = --install-only ] || ((failed)); then
  table  # exits; with a failed install the steps would only fail too
fi
"$PY" - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
PY
# pyproject's pythonpath ["."] would put the source folder before SITE: the repo is on PYTHONPATH already
step "device tests" 100 ' passed| failed| skipped|error' "$PY" -m pytest -q -m device -p no:cacheprovider \
  -o pythonpath=
step "throughput ViT-B/16 bf16" 60 'training step' "$PY" benchmarks/throughput.py --model vit_b16 \
  --accelerator cuda --batch 128 --precision bf16-mixed --iters 20
step "throughput demo bf16" 25 'training step' "$PY" benchmarks/throughput.py --accelerator cuda --batch 256 \
  --precision bf16-mixed
for method in ties tsv_m iso_cts; do
  step "merge $method, 8 ViT-B/16 experts (cuda)" 60 "^\| $method " "$PY" benchmarks/merge_methods.py \
    --methods "$method" --blocks 12 --tasks 8 --threads 8 --device cuda
done
DATA=(data.size=[32,32] "data.num_samples={train: 16, val: 8, test: 8}" progress=false threads=2)
CUDA=(runtime.accelerator=cuda)
step "train-experts tiny (cuda)" 45 '.' "$PY" -m simo_merge.cli train-experts "${DATA[@]}" "${CUDA[@]}" \
  "encoder.kwargs={img_size: 32, patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2}" \
  data.tasks=[semseg,depth] data.batch_size=4 pretrain.steps=2 expert.probe_steps=1 expert.finetune_steps=2 \
  output_dir="$TINY"
step "merge tsv_m tiny (cuda, key groups)" 20 '.' "$PY" -m simo_merge.cli merge pool.dir="$TINY/experts" \
  method.name=tsv_m "${CUDA[@]}" output_dir="$TINY/merge"
step "realign deep bf16 tiny (cuda)" 30 '.' "$PY" -m simo_merge.cli realign pool.dir="$TINY/experts" \
  checkpoint="$TINY/merge/merged.safetensors" "realign.realigners=[deep]" \
  "realign.params={rank: 4, steps: 5, batch_size: 4}" tsne=false \
  "${DATA[@]}" "${CUDA[@]}" runtime.precision=bf16-mixed output_dir="$TINY/realign"
step "evaluate tiny (cuda)" 20 '.' "$PY" -m simo_merge.cli evaluate pool.dir="$TINY/experts" \
  checkpoint="$TINY/merge/merged.safetensors" "${DATA[@]}" "${CUDA[@]}" output="$TINY/evaluate/metrics.json"
step "affinity tiny (cuda)" 40 '.' "$PY" -m simo_merge.cli affinity pool.dir="$TINY/experts" "${DATA[@]}" \
  "${CUDA[@]}" transfer_lambdas=[0.0,1.0] select_lambdas=[0.5,1.0] output_dir="$TINY/affinity"
# bench clip on its stand-in at full size: open_clip ViT-B/32 (random θ0, experts θ0 + noise, centroid
# heads) at 224 px; the test suite's fixture writers make the data and task_vectors folders
step "clip ViT-B/32 stand-in folders (8 tasks)" 60 '^clip stand-in' "$PY" - "$TINY/clip8" <<'PYFIX'
import sys
from pathlib import Path

from tests.helpers.clip8_fixture import write_clip8_data, write_task_vectors

root = Path(sys.argv[1])
write_clip8_data(root / "data")
text = write_task_vectors(root / "ckpt", root / "data", arch="ViT-B-32", image_size=224)
print("clip stand-in folders:", root, text)
PYFIX
step "bench clip tasks=8 ViT-B/32 224 px (cuda)" 90 '.' "$PY" -m simo_merge.cli bench clip \
  --config configs/clip_standin.yaml --checkpoints "$TINY/clip8/ckpt" --data "$TINY/clip8/data" \
  model=ViT-B-32 image_size=224 text_checkpoint="$TINY/clip8/ckpt/clip_text.safetensors" "${CUDA[@]}" \
  output_dir="$TINY/clip8/run"
step "demo at GPU scale" 200 '.' "$PY" -m simo_merge.cli demo --config demo_gpu progress=false \
  output_dir="$OUT/demo_gpu"
[ -f "$OUT/demo_gpu/report.md" ] && sed -n '/^| model/,/^$/p' "$OUT/demo_gpu/report.md"
step "throughput ViT-B/16 fp32" 40 'training step' "$PY" benchmarks/throughput.py --model vit_b16 \
  --accelerator cuda --batch 128 --precision 32-true --iters 10
table
