"""GPU: NF4 dequantization — bitsandbytes' CUDA kernel vs learnft's (eager, fused by torch.compile, and a Triton kernel), as GB/s.

A 4-bit weight is read as packed bytes + block constants and written out in bf16, so dequantization is memory-bound:
the number that matters is bytes moved per second, against the card's own copy bandwidth (measured with a plain
device-to-device copy of the same output size). All sides dequantize the same bitsandbytes-packed tensor (nf4,
blocksize 64, double quantization); the table gives each one's largest difference from bitsandbytes' output and
whether it is bit-identical. The code is `qlora_gpu.dequant_benchmark` (beside this script; lesson 07's GPU section runs
the same); the Triton kernel is `qlora_gpu.triton_nf4_kernel`. `--sweep` first times the Triton kernel's launch configs
on the largest size and uses the fastest for every size. Each size is timed twice: back to back as the training step
launches it (`ms`), and replayed from a CUDA graph (no gaps between launches: the device's own time), which matters for
the small sizes whose kernels take about as long as launching them.

    python benchmarks/bench_dequant_gpu.py [--sizes 4096,11008x4096,16384] [--iters 50] [--sweep] [--json out.json]
"""
import argparse, json
from pathlib import Path
import torch
import qlora_gpu as Q
from learnft.speed import H200_BF16_FLOPS as PEAK_BF16

PEAK_FP32 = 67e12    # H200 SXM datasheet: fp32 FLOP/s on the CUDA cores (the dense bf16 tensor-core peak: learnft.speed)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--size', type=int, default=None, help='one n x n size (old form)')
    ap.add_argument('--sizes', default='4096,11008x4096,16384'); ap.add_argument('--iters', type=int, default=50)
    ap.add_argument('--sweep', action='store_true'); ap.add_argument('--json', default=None)
    a = ap.parse_args()
    assert torch.cuda.is_available(), 'this benchmark needs a CUDA GPU'
    import bitsandbytes, triton
    shapes = Q.dequant_shapes(str(a.size) if a.size else a.sizes)
    print(f'{torch.cuda.get_device_name()}  torch {torch.__version__}  triton {triton.__version__}  bitsandbytes {bitsandbytes.__version__}')
    out = {'device': torch.cuda.get_device_name(), 'torch': torch.__version__, 'triton': triton.__version__,
           'bitsandbytes': bitsandbytes.__version__, 'intensity': Q.dequant_intensity(),
           'peaks': {'bf16_tensor_FLOP/s': PEAK_BF16, 'fp32_FLOP/s': PEAK_FP32}}
    best = None
    if a.sweep:
        big = max(shapes, key=lambda s: s[0] * s[1])
        sweep = Q.triton_sweep(big, iters=30)
        out['sweep'] = sweep
        print(f'\nTriton launch configs on a {big[0]}x{big[1]} weight, fastest first:')
        for r in sweep: print(f"  blocks {r['blocks']:>4}  warps {r['num_warps']}  {'gather     ' if r['gather'] else 'interleave '} "
                              f"{r['ms']:7.3f} ms {r['GB/s']:>7,.0f} GB/s  bit-identical: {r['bit_identical']}")
        ok = [r for r in sweep if r['bit_identical']] or sweep
        best = {k: ok[0][k] for k in ('blocks', 'num_warps', 'gather')}
        print(f'using {best}')
    out['sizes'] = []
    for shape in shapes:
        print()
        res = Q.dequant_benchmark(iters=a.iters, shape=shape, triton_config=best, graphs=True)
        Q.print_dequant_table(res); out['sizes'].append(res)
        torch.cuda.empty_cache()
    it = out['intensity']
    print(f"\narithmetic intensity (counted per output value: {it['counted']}):")
    print(f"  {it['flops_per_value']:.3f} FLOP / {it['bytes_per_value']:.3f} B = {it['flop_per_byte']:.2f} FLOP/B "
          f"({it['op_per_byte']:.2f} ops/B counting all ops); the ridge points: "
          f"{PEAK_BF16 / out['sizes'][-1]['copy_GB/s'] / 1e9:.0f} FLOP/B (bf16 tensor peak), {PEAK_FP32 / out['sizes'][-1]['copy_GB/s'] / 1e9:.0f} (fp32)")
    if a.json: Path(a.json).write_text(json.dumps(out, indent=1))
