"""GPU: NF4 dequantization — bitsandbytes' CUDA kernel vs learnft's (eager, and fused by torch.compile), as GB/s.

A 4-bit weight is read as packed bytes + block constants and written out in bf16, so dequantization is memory-bound:
the number that matters is bytes moved per second, against the card's own copy bandwidth (measured with a plain
device-to-device copy of the same output size). All sides dequantize the same bitsandbytes-packed tensor (nf4,
blocksize 64, double quantization); the table gives each one's largest difference from bitsandbytes' output.
The code is `qlora_gpu.dequant_benchmark` (beside this script; lesson 07's GPU section runs the same).

    python benchmarks/bench_dequant_gpu.py [--size 16384] [--iters 50]     # needs CUDA and bitsandbytes
"""
import argparse
import torch
from qlora_gpu import dequant_benchmark, print_dequant_table

if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--size', type=int, default=16384); ap.add_argument('--iters', type=int, default=50)
    a = ap.parse_args()
    assert torch.cuda.is_available(), 'this benchmark needs a CUDA GPU'
    print(f'{torch.cuda.get_device_name()}  torch {torch.__version__}')
    print_dequant_table(dequant_benchmark(a.size, a.iters))
