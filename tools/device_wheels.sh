#!/usr/bin/env bash
# Bring bitsandbytes and DeepSpeed to a GPU machine that has torch/transformers/peft but no package index.
#
#   here (with pip access):      bash tools/device_wheels.sh            # fills .whl/ (git-ignored) with wheels for CPython 3.12
#   on the GPU machine:          bash tools/device_wheels.sh --install  # installs them into /tmp/site; then
#                                export PYTHONPATH=/tmp/site:$PWD
#
# With the course's `device` tool: run(..., carry=[".whl"], command="bash tools/device_wheels.sh --install && export
# PYTHONPATH=/tmp/site:$PWD && python benchmarks/bench_train_gpu.py ...").  Versions are those this course is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--install" ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  exit 0
fi
PY=${PYTHON:-.venv/bin/python}
mkdir -p .whl
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
# what the device image lacks (it has torch, transformers, peft, accelerate, pyarrow, pandas, einops, msgpack, ninja, psutil,
# py-cpuinfo, xxhash, fsspec): bitsandbytes; DeepSpeed's hjson and pydantic; datasets with dill and multiprocess
"$PY" -m pip download -q --no-deps "${plat[@]}" -d .whl bitsandbytes==0.50.2 hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5 \
    annotated-types typing-inspection==0.4.5 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
# DeepSpeed is published as a source archive: build its (pure-Python, ops compiled just in time) wheel here
"$PY" -m pip wheel -q --no-deps -w .whl deepspeed==0.19.8
ls -la .whl
