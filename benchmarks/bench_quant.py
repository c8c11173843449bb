"""learnft.quant vs bitsandbytes (CPU): quantize_4bit / dequantize_4bit wall time, side by side, as ratios.

    .venv/bin/python benchmarks/bench_quant.py [--repeats 5]

Prints a table: per weight shape and operation, bitsandbytes' median time, learnft's, and learnft/bitsandbytes
(> 1 means learnft is slower). Both produce identical bytes (checked before timing). Not run in CI.
"""
import argparse, statistics, time
import torch

torch._dynamo.config.disable = True  # bitsandbytes' CPU fallbacks are torch.compile'd per shape; time the eager kernels

import bitsandbytes.functional as F
from learnft.quant import quantize_4bit, dequantize_4bit, same_bits


def median_time(fn, repeats):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main(repeats=5):
    shapes = [(576, 576), (1536, 576), (2048, 2048)]
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; median of {repeats}')
    print(f"{'shape':>14} {'op':>22} {'bitsandbytes ms':>16} {'learnft ms':>11} {'learnft/bnb':>12}")
    for shape in shapes:
        w = torch.randn(shape) * 0.02
        for dq in (False, True):
            p, s = quantize_4bit(w, 64, 'nf4', dq)
            bp, bs = F.quantize_4bit(w, blocksize=64, quant_type='nf4', compress_statistics=dq)
            assert same_bits(p, bp) and same_bits(dequantize_4bit(p, s), F.dequantize_4bit(bp, bs))
            tag = 'nf4+DQ' if dq else 'nf4'
            rows = [(f'quantize {tag}', lambda: F.quantize_4bit(w, blocksize=64, quant_type='nf4', compress_statistics=dq),
                     lambda: quantize_4bit(w, 64, 'nf4', dq)),
                    (f'dequantize {tag}', lambda: F.dequantize_4bit(bp, bs), lambda: dequantize_4bit(p, s))]
            for op, theirs, ours in rows:
                tb, to = median_time(theirs, repeats), median_time(ours, repeats)
                print(f'{str(shape):>14} {op:>22} {tb * 1e3:>16.2f} {to * 1e3:>11.2f} {to / tb:>11.2f}x')


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--repeats', type=int, default=5)
    main(ap.parse_args().repeats)
