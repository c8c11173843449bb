"""GPU: NF4 dequantization — bitsandbytes' CUDA kernel vs learnft's (eager, and fused by torch.compile), as GB/s.

A 4-bit weight is read as packed bytes + block constants and written out in bf16, so dequantization is memory-bound:
the number that matters is bytes moved per second, against the card's own copy bandwidth (measured here with a plain
device-to-device copy of the same output size). Both sides dequantize the same bitsandbytes-packed tensor (nf4,
blocksize 64, double quantization) and the outputs are checked equal before anything is timed.

    python benchmarks/bench_dequant_gpu.py [--size 16384] [--iters 50]     # needs CUDA and bitsandbytes
"""
import argparse
import torch


def timed(fn, iters):
    for _ in range(3): fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(iters): fn()
    b.record(); torch.cuda.synchronize()
    return a.elapsed_time(b) / iters / 1e3


def fused_dequant(packed, absmax, code, blocksize: int, dtype=torch.bfloat16):
    "learnft's dequantization as one expression: unpack both nibbles, look up the codebook, scale per block."
    p = packed.reshape(-1)
    v = torch.stack([code[(p >> 4).int()], code[(p & 0xF).int()]], dim=-1).reshape(-1, blocksize)
    return (v * absmax[:, None]).to(dtype)


def fused_dequant_dq(packed, qabsmax, code2, absmax2, offset, code, blocksize: int, blocksize2: int, dtype=torch.bfloat16):
    "The same with double quantization folded in: 8-bit absmax codes -> fp32 absmax -> 4-bit codes -> bf16, one graph."
    absmax = (code2[qabsmax.int()].reshape(-1, blocksize2) * absmax2[:, None]).reshape(-1) + offset
    return fused_dequant(packed, absmax, code, blocksize, dtype)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--size', type=int, default=16384); ap.add_argument('--iters', type=int, default=50)
    a = ap.parse_args()
    import bitsandbytes.functional as F
    from learnft.quant import QuantState, dequantize_4bit
    w = torch.randn(a.size, a.size, device='cuda', dtype=torch.bfloat16)
    packed, bstate = F.quantize_4bit(w, blocksize=64, quant_type='nf4', compress_statistics=True)
    state = QuantState.from_bnb(bstate)
    ref = F.dequantize_4bit(packed, bstate)
    ours_eager = lambda: dequantize_4bit(packed, state)
    compiled = torch.compile(fused_dequant_dq, fullgraph=True)
    s2 = state.state2
    assert state.absmax.numel() % s2.blocksize == 0, 'the fused path assumes whole nested blocks (true for this size)'
    def ours_compiled():  # one compiled graph: nested absmax, then unpack + lookup + scale
        return compiled(packed, state.absmax, s2.code, s2.absmax, state.offset, state.code, 64, s2.blocksize).view(state.shape)
    same = {}
    for name, f in (('eager', ours_eager), ('compiled', ours_compiled)):
        o = f()
        assert torch.allclose(o.float(), ref.float(), rtol=1e-2, atol=1e-3), f'{name} dequantization differs from bitsandbytes'
        same[name] = (torch.equal(o, ref), (o.float() - ref.float()).abs().max().item())
    n = w.numel()
    moved = packed.numel() + state.absmax.numel() + n * 2        # bytes read (codes + 8-bit constants) + bf16 written
    out = torch.empty_like(ref); copy_bytes = 2 * n * 2
    t_copy = timed(lambda: out.copy_(ref), a.iters)
    rows = [('bitsandbytes (CUDA kernel)', timed(lambda: F.dequantize_4bit(packed, bstate), a.iters)),
            ('learnft eager (torch ops)', timed(ours_eager, max(5, a.iters // 10))),
            ('learnft fused (torch.compile)', timed(ours_compiled, a.iters))]
    copy_bw = copy_bytes / t_copy / 1e9
    print(f'{torch.cuda.get_device_name()}  torch {torch.__version__}  weight {a.size}x{a.size} nf4, blocksize 64, double quant')
    print(f'device copy bandwidth (read+write of the bf16 output size): {copy_bw:,.0f} GB/s\n')
    print(f"{'dequantize':32} {'ms':>8} {'GB/s':>8} {'vs bnb':>8} {'of copy bw':>11}")
    bnb_t = rows[0][1]
    for name, t in rows:
        bw = moved / t / 1e9
        print(f'{name:32} {t*1e3:>8.3f} {bw:>8,.0f} {bnb_t/t:>7.2f}x {bw/copy_bw:>10.0%}')
    for name, (eq, md) in same.items():
        print(f"learnft {name}: {'bit-identical to' if eq else f'max |diff| {md:.2e} from'} bitsandbytes' output")
