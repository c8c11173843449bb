#!/bin/bash
# The GPU runs behind lesson 08b's dequantization roofline, 1B MFU table and Unsloth peer row, on a GPU machine with no
# package index: the NF4 dequantization kernels (with the Triton kernel), the 1B shape at >= 8k tokens per step, whether
# Unsloth imports, and Unsloth on the 1B shape. The wheels travel in .whl/ (bitsandbytes stripped to its CUDA 13.0
# library, datasets, dill, multiprocess, trl, liger-kernel) and .whl_uns/ (unsloth without its studio/ UI, unsloth_zoo and
# the small packages they import), the SmolLM2 tokenizer in .tok/: `bash tools/device_wheels.sh --peers` makes all three.
# Results go to $OUT (the device tool's output folder; benchmarks/results/ holds the 2026-12-03 run's).
#   bash benchmarks/gpu_speed_run.sh [probe] [dequant] [lora] [host] [mfu] [unsloth]        (default: probe dequant mfu)
# with VARIANTS=, PROFILE=, SHAPE=, RUN= (the results' name), PEERS=, PEER_BATCH=, SIZES= and *_S= (time limits) to override
# what each step runs. lora: the fused LoRA dropout kernels checked and timed (bench_lora_dropout_gpu.py); host: the host's
# time per call of the fused op and of peft's, and where it goes (bench_lora_host_gpu.py).
set -u
OUT=${OUT:-benchmarks/results/new}; mkdir -p "$OUT"
STEPS=${*:-probe dequant mfu}
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | grep -v WARNING | tail -2
export PYTHONPATH=/tmp/site:$PWD LEARNFT_TOKENIZER=$PWD/.tok HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader
python3 -m pip list 2>/dev/null > $OUT/pip_list.txt
UNS=/tmp/site_uns:/tmp/site:$PWD
for s in $STEPS; do case $s in
  probe)
    python3 -m pip install -q --no-index --no-deps --target /tmp/site_uns .whl_uns/*.whl 2>&1 | grep -v WARNING | tail -2
    PYTHONPATH=$UNS timeout ${PROBE_S:-40} python3 benchmarks/probe_unsloth_imports.py > $OUT/unsloth_probe.txt 2>&1
    tail -c 2500 $OUT/unsloth_probe.txt ;;
  dequant)
    timeout ${DEQUANT_S:-200} python3 benchmarks/bench_dequant_gpu.py --sweep --sizes ${SIZES:-4096,11008x4096,16384} \
      --json $OUT/bench_dequant_gpu_h200.json 2>&1 | tee $OUT/bench_dequant_gpu_h200.txt ;;
  lora)
    timeout ${LORA_S:-150} python3 benchmarks/bench_lora_dropout_gpu.py --json $OUT/bench_lora_dropout_gpu_h200.json 2>&1 \
      | tee $OUT/bench_lora_dropout_gpu_h200.txt ;;
  host)
    timeout ${HOST_S:-90} python3 benchmarks/bench_lora_host_gpu.py --json $OUT/bench_lora_host_gpu_h200.json 2>&1 \
      | tee $OUT/bench_lora_host_gpu_h200.txt ;;
  mfu)
    timeout ${MFU_S:-340} python3 benchmarks/bench_mfu_gpu.py --shape ${SHAPE:-1b} --seq 2048 --steps 8 --work /tmp/w \
      --variants ${VARIANTS:-varlen:16:liger:compile,varlen:16:liger,varlen:8:liger:compile,varlen:24:liger:compile} \
      --profile ${PROFILE:-varlen:16:liger:compile,varlen:16:liger,varlen:8:liger:compile,varlen:24:liger:compile} \
      --json $OUT/bench_mfu_gpu_h200_${RUN:-run4_1b}.json 2>&1 | tee $OUT/bench_mfu_gpu_h200_${RUN:-run4_1b}.txt ;;
  unsloth)
    python3 -m pip install -q --no-index --no-deps --target /tmp/site_uns .whl_uns/*.whl 2>&1 | grep -v WARNING | tail -2
    PYTHONPATH=$UNS timeout ${UNSLOTH_S:-240} python3 benchmarks/bench_mfu_gpu.py --shape ${USHAPE:-1b} --seq 2048 --steps 8 --work /tmp/w \
      --variants "${UVARIANTS:-}" --peers ${PEERS:-unsloth,unsloth:nodrop} --peer-batch ${PEER_BATCH:-16} \
      --json $OUT/bench_mfu_gpu_h200_unsloth.json 2>&1 | tee $OUT/bench_mfu_gpu_h200_unsloth.txt ;;
esac; done
