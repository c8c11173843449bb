#!/usr/bin/env bash
# Bring bitsandbytes, DeepSpeed and the speed lesson's peers to a GPU machine that has torch/transformers/peft but no
# package index.
#
#   here (with pip access):      bash tools/device_wheels.sh            # fills .whl/ (git-ignored) with wheels for CPython 3.12
#                                bash tools/device_wheels.sh --peers    # .whl/ for benchmarks/gpu_speed_run.sh (lesson 08b):
#                                    bitsandbytes with only its CUDA 13.0 library, datasets, TRL, Liger; and .whl_uns/:
#                                    Unsloth without its web UI (studio/), unsloth_zoo, and the TRL/datasets versions it pins
#   on the GPU machine:          bash tools/device_wheels.sh --install  # installs .whl/ into /tmp/site; then
#                                export PYTHONPATH=/tmp/site:$PWD
#
# With the course's `device` tool: run(..., carry=[".whl"], command="bash tools/device_wheels.sh --install && export
# PYTHONPATH=/tmp/site:$PWD && python benchmarks/bench_train_gpu.py ..."). At most 64 MiB travels: bitsandbytes' wheel
# holds a library for every CUDA version (43 MB), so --peers keeps only the one the GPU machine's torch (cu130) loads.
# Versions are those this course is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--install" ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  exit 0
fi
PY=${PYTHON:-.venv/bin/python}
mkdir -p .git/info
for d in /.whl/ /.whl_uns/ /.tok/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
strip() {   # strip WHEEL OUT REGEX: copy a wheel without the files whose path matches REGEX (and their RECORD lines)
  "$PY" - "$@" <<'PYEOF'
import re, sys, zipfile
src, dst, drop = sys.argv[1], sys.argv[2], re.compile(sys.argv[3])
with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, 'w', zipfile.ZIP_DEFLATED) as zo:
    for it in zi.infolist():
        if drop.search(it.filename): continue
        data = zi.read(it.filename)
        if it.filename.endswith('.dist-info/RECORD'):
            data = ''.join(l + '\n' for l in data.decode().splitlines() if not drop.search(l.split(',')[0])).encode()
        zo.writestr(it, data)
PYEOF
}
if [[ "${1:-}" == "--peers" ]]; then
  tmp=$(mktemp -d); rm -rf .whl .whl_uns; mkdir -p .whl .whl_uns
  "$PY" -m pip download -q --no-deps "${plat[@]}" -d "$tmp/w" bitsandbytes==0.50.2 datasets==5.2.0 dill==0.4.1 \
      multiprocess==0.70.19 trl==1.16.0 liger-kernel==0.8.5
  strip "$tmp"/w/bitsandbytes-*.whl .whl/$(basename "$tmp"/w/bitsandbytes-*.whl) 'libbitsandbytes_(cuda1[12]|cuda132|rocm)'
  mv "$tmp"/w/{datasets,dill,multiprocess,trl,liger}*.whl .whl/
  "$PY" -m pip download -q --no-deps "${plat[@]}" -d "$tmp/u" unsloth==2026.10.9 unsloth_zoo==2026.10.9 tyro==1.0.17 \
      docstring_parser==0.18.0 typeguard==4.6.1 shtab==1.13.0 cut_cross_entropy==25.1.1 torchao==0.18.0 msgspec==0.23.0 \
      trl==1.15.0 datasets==4.8.5     # unsloth 2026.10.9 pins trl<=1.15 and datasets<5
  strip "$tmp"/u/unsloth-2026*.whl .whl_uns/$(basename "$tmp"/u/unsloth-2026*.whl) '^studio/'
  rm "$tmp"/u/unsloth-2026*.whl; mv "$tmp"/u/*.whl .whl_uns/; rm -rf "$tmp"
  "$PY" -c "from learnft.models import load_smollm2_tokenizer as t; t().save_pretrained('.tok')"   # LEARNFT_TOKENIZER there
  du -sh .whl .whl_uns .tok; exit 0
fi
mkdir -p .whl
# what the device image lacks (it has torch, transformers, peft, accelerate, pyarrow, pandas, einops, msgpack, ninja, psutil,
# py-cpuinfo, xxhash, fsspec): bitsandbytes; DeepSpeed's hjson and pydantic; datasets with dill and multiprocess
"$PY" -m pip download -q --no-deps "${plat[@]}" -d .whl bitsandbytes==0.50.2 hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5 \
    annotated-types typing-inspection==0.4.5 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
# DeepSpeed is published as a source archive: build its (pure-Python, ops compiled just in time) wheel here
"$PY" -m pip wheel -q --no-deps -w .whl deepspeed==0.19.8
ls -la .whl
