#!/usr/bin/env bash
# Downloads, where the package index is reachable, the wheels that the GPU machine lacks into .whl/
# (git-ignored; benchmarks/gpu_check.sh installs them there offline). The GPU machine has Python 3.12 with
# torch, torchvision, timm, lightning, torchmetrics, h5py, safetensors, matplotlib, scikit-learn and tqdm
# (and so their dependencies: numpy, scipy, pillow, PyYAML, huggingface_hub, packaging, ...) and no
# network. WHEELS below is what pip's resolver adds to that set for the project and the check's pytest,
# pinned so that the set stays consistent (pydantic pins pydantic-core exactly):
#   open_clip_torch: ftfy, regex, wcwidth | segmentation-models-pytorch: nothing more
#   albumentations: albucore, pydantic (+ pydantic-core, annotated-types, typing-inspection),
#     opencv-python-headless (imported by albumentations; 4.11: 50 MB, 5.x: 58 MB, too big for the
#     64 MiB the device machine carries), stringzilla and simsimd (albucore; stringzilla 3.x: 0.3 MB, 5.x: 4 MB)
#   omegaconf 2.4: PyYAML only (preinstalled) | pytest (< 8.4: no pygments), pluggy, iniconfig
#   the project itself: lightning-fabric (the `lightning` package holds lightning.fabric, not lightning_fabric)
#   setuptools, wheel: the project's build requirements, for `pip install --no-index --find-links .whl .`
#     (its isolated build sees none of the preinstalled packages: wheel 0.45, as later ones need packaging)
# After the download the requirements of every wheel and of pyproject.toml (markers for Python 3.12 on
# Linux) are checked against the wheels here plus PREINSTALLED; one unmet fails the script, and so does
# a total over 64 MiB. Prints the total size.
#   bash benchmarks/gpu_wheels.sh                 # Python 3.12 (the GPU machine)
#   PYVER=3.11 DEST=/tmp/whl311 bash benchmarks/gpu_wheels.sh   # another interpreter's wheels (dry runs)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
PYVER=${PYVER:-3.12}
DEST=${DEST:-.whl}
WHEELS=(
  open_clip_torch==3.3.0 ftfy==6.3.1 regex==2026.12.2 wcwidth==0.9.5
  segmentation-models-pytorch==0.6.0
  albumentations==2.0.8 albucore==0.0.24 opencv-python-headless==4.11.0.86 stringzilla==3.12.6
  simsimd==6.5.16 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  omegaconf==2.4.0 lightning-fabric==2.6.6
  pytest==8.3.5 pluggy==1.7.0 iniconfig==2.3.1
  setuptools==84.2.1 wheel==0.45.1
)
PREINSTALLED="torch torchvision timm lightning torchmetrics h5py safetensors matplotlib scikit-learn tqdm
  numpy scipy pillow pyyaml huggingface-hub packaging typing-extensions filelock fsspec jinja2 sympy
  networkx lightning-utilities pytorch-lightning"
rm -rf "$DEST"
mkdir -p "$DEST"
"$PY" -m pip download --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --dest "$DEST" "${WHEELS[@]}"
"$PY" - "$DEST" "$PYVER" "$PREINSTALLED" <<'PY'
import re
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

dest, pyver, preinstalled = Path(sys.argv[1]), sys.argv[2], sys.argv[3].split()
env = {"python_version": pyver, "python_full_version": pyver + ".0", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
have = {canonicalize_name(p): None for p in preinstalled}
metas = {}
for whl in sorted(dest.glob("*.whl")):
    with zipfile.ZipFile(whl) as z:
        text = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    name = canonicalize_name(re.search(r"^Name: (.+)$", text, re.M).group(1).strip())
    have[name] = Version(re.search(r"^Version: (.+)$", text, re.M).group(1).strip())
    metas[whl.name] = re.findall(r"^Requires-Dist: (.+)$", text, re.M)
bad = []
try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: the project's own list is not checked
    tomllib = None
if tomllib is not None:
    metas["pyproject.toml"] = tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"]
for whl, reqs in metas.items():
    for line in reqs:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        if name not in have:
            bad.append(f"{whl}: needs {line} (neither a wheel here nor preinstalled)")
        elif have[name] is not None and not req.specifier.contains(have[name], prereleases=True):
            bad.append(f"{whl}: needs {line}, the wheel here is {have[name]}")
total = sum(p.stat().st_size for p in dest.glob("*.whl"))
print(f"{len(list(dest.glob('*.whl')))} wheels in {dest}: {total / 2**20:.1f} MiB ({total} bytes)")
if bad:
    sys.exit("unmet requirements:\n" + "\n".join(bad))
if total > 64 * 2**20:
    sys.exit(f"{dest} holds {total / 2**20:.1f} MiB, over the 64 MiB the device machine carries")
PY
