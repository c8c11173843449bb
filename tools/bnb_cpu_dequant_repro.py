#!/usr/bin/env python
"""Standalone repro: bitsandbytes' CPU `dequantize_4bit` against the exact 4-bit dequantization, by shape.

Needs only torch and bitsandbytes (no learnft), so it can be attached to an upstream report as it is:

    python tools/bnb_cpu_dequant_repro.py            # the table, on this machine's CPU
    python tools/bnb_cpu_dequant_repro.py --json F   # also the rows as JSON
    python tools/bnb_cpu_dequant_repro.py --sweep    # every (rows, even cols <= 320) at blocksizes 32..256: which shapes are wrong

The exact reference is computed from bitsandbytes' *own* packed codes and absmax (`code[nibble] * absmax[block]`, blocks of
`blocksize` consecutive elements of the flattened tensor), so a mismatch is in the dequantization, not in the quantization.
Three ways to dequantize are compared with it:

- `dispatch`: `bitsandbytes.functional.dequantize_4bit`, what every user calls (the kernel bitsandbytes picks for this CPU);
- `native`:   the compiled CPU kernel (`lib.cdequantize_blockwise_cpu_{nf4,fp4}_{fp32,bf16,fp16}`) called directly, as the
              dispatcher calls it when it uses it (2-D: rows = prod(shape[:-1]), cols = shape[-1]);
- `torch`:    bitsandbytes' pure-torch default kernel (`backends.default.ops._dequantize_4bit_compute`).

bitsandbytes 0.50 registers its native CPU kernels only when torch reports the CPU capability "AVX512"; elsewhere
`dispatch` is the pure-torch kernel. The native kernel itself picks AVX512 code at run time on a CPU that has it.
"""
import argparse, ctypes as ct, json, platform, re, sys
from math import prod

import torch

SHAPES = [(80, 96), (96, 80), (64, 96), (7, 96), (80, 32), (2, 96), (1, 96), (4096, 3), (333, 129), (96,), (1000,),
          (128, 64), (64, 128), (576, 576), (1536, 576), (3, 4, 96)]
BLOCKSIZES = (64, 128)


def cpu_flags() -> dict:
    "What this CPU reports that bitsandbytes and torch decide on."
    try: text = open('/proc/cpuinfo').read()
    except OSError: text = ''
    flags = set(re.findall(r'\b(avx512_bf16|amx_bf16|avx512f|avx2)\b', text))
    model = re.search(r'model name\s*:\s*(.+)', text)
    import bitsandbytes as bnb
    from bitsandbytes.functional import has_avx512bf16
    return {'cpu': model.group(1).strip() if model else platform.processor(), 'flags': sorted(flags),
            'torch': torch.__version__, 'torch_cpu_capability': torch.backends.cpu.get_cpu_capability(),
            'bitsandbytes': bnb.__version__, 'bnb_has_avx512bf16': bool(has_avx512bf16())}


def exact_dequantize(packed: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, blocksize: int, shape, dtype, block_index=None):
    "code[nibble] * absmax[block] in float64 (exact for two fp32 factors), rounded once to `dtype`; block = flat index // blocksize."
    b = packed.reshape(-1).view(torch.uint8)
    nib = torch.stack([b >> 4, b & 15], dim=1).reshape(-1)[:prod(shape)].long()
    if block_index is None: block_index = torch.arange(prod(shape)) // blocksize
    vals = code.double()[nib] * absmax.double()[block_index]
    return vals.float().to(dtype).reshape(shape)


def native_dequantize(packed, absmax, quant_type, blocksize, shape, dtype):
    "The compiled CPU kernel, called as bitsandbytes' CPU dispatcher calls it; None if this build lacks it."
    from bitsandbytes.cextension import lib
    from bitsandbytes.functional import get_ptr
    name = {torch.float32: 'fp32', torch.bfloat16: 'bf16', torch.float16: 'fp16'}[dtype]
    fn = getattr(lib, f'cdequantize_blockwise_cpu_{quant_type}_{name}', None)
    if fn is None or shape[-1] % 2: return None             # bitsandbytes sends odd last dimensions to the torch kernel
    m, n = (1, shape[0]) if len(shape) == 1 else (prod(shape[:-1]), shape[-1])
    out = torch.empty(shape, dtype=dtype)
    fn(get_ptr(packed.view(torch.uint8).reshape(m, n // 2)), get_ptr(absmax.float()), get_ptr(out),
       ct.c_longlong(blocksize), ct.c_longlong(m), ct.c_longlong(n))
    return out


def torch_dequantize(packed, absmax, quant_type, blocksize, shape, dtype):
    "bitsandbytes' pure-torch default kernel (eager)."
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
    from bitsandbytes.backends.utils import _get_4bit_code
    f = getattr(_dequantize_4bit_compute, '__wrapped__', _dequantize_4bit_compute)
    return f(packed.view(torch.uint8).reshape(-1), absmax.float(), _get_4bit_code(quant_type, packed.device), blocksize, shape, dtype)


def row(shape, blocksize, quant_type='nf4', dtype=torch.float32, seed=0) -> dict:
    "One shape: max |error| of each way against the exact dequantization and against the original weights."
    import bitsandbytes.functional as F
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(shape, generator=g) * 0.05).to(dtype)
    q, s = F.quantize_4bit(w, blocksize=blocksize, quant_type=quant_type, compress_statistics=False)
    exact = exact_dequantize(q, s.absmax, s.code, blocksize, tuple(shape), dtype)
    emulated = exact_dequantize(q, s.absmax, s.code, blocksize, tuple(shape), dtype, avx512_block_index(tuple(shape), blocksize))
    r = {'shape': 'x'.join(map(str, shape)), 'blocksize': blocksize, 'quant_type': quant_type, 'dtype': str(dtype).split('.')[-1],
         'exact_vs_w': (exact.float() - w.float()).abs().max().item()}
    ways = {'dispatch': F.dequantize_4bit(q, s), 'native': native_dequantize(q, s.absmax, quant_type, blocksize, tuple(shape), dtype),
            'torch': torch_dequantize(q, s.absmax, quant_type, blocksize, tuple(shape), dtype)}
    for k, d in ways.items():
        if d is not None: d = d.reshape(exact.shape)        # (bitsandbytes returns a 1-D input as one row)
        r[f'{k}_exact'] = None if d is None else bool(torch.equal(d, exact))
        r[f'{k}_as_avx512_index'] = None if d is None else bool(torch.equal(d, emulated))
        r[f'{k}_vs_w'] = None if d is None else (d.float() - w.float()).abs().max().item()
    return r


def avx512_block_index(shape, blocksize):
    """The absmax block bitsandbytes 0.50's compiled kernel was measured to use for each element (flat): for rows whose length is a
    multiple of 16 (its vector loop), block row * (cols // blocksize) + col // blocksize, i.e. a new block at every row;
    otherwise (its scalar loop) the right block, (row * cols + col) // blocksize."""
    m, n = (prod(shape[:-1]), shape[-1]) if len(shape) > 1 else (1, shape[0])
    i, j = torch.arange(m)[:, None], torch.arange(n)[None, :]
    return ((i * (n // blocksize) + j // blocksize) if n % 16 == 0 else (i * n + j) // blocksize).reshape(-1)


def rule(shape, blocksize):
    "Closed form of avx512_block_index(shape) != the right block somewhere."
    m, n = (prod(shape[:-1]), shape[-1]) if len(shape) > 1 else (1, shape[0])
    return m > 1 and n % 16 == 0 and n % blocksize != 0 and m * n > blocksize


def sweep():
    """All (rows, even cols) up to 8 x 320 at blocksizes 32..256: which come out wrong, whether `rule` names exactly those, and whether
    `avx512_block_index` reproduces every value bitsandbytes returns."""
    import bitsandbytes.functional as F
    wrong, predicted, reproduced = set(), set(), 0
    for bs in (32, 64, 128, 256):
        for m in (1, 2, 3, 5, 8):
            for n in range(2, 321, 2):
                w = torch.randn(m, n) * 0.05
                q, s = F.quantize_4bit(w, blocksize=bs, quant_type='nf4', compress_statistics=False)
                d = F.dequantize_4bit(q, s).reshape(m, n)
                exact = exact_dequantize(q, s.absmax, s.code, bs, (m, n), torch.float32)
                emulated = exact_dequantize(q, s.absmax, s.code, bs, (m, n), torch.float32, avx512_block_index((m, n), bs))
                if rule((m, n), bs): predicted.add((m, n, bs))
                if not torch.equal(d, exact): wrong.add((m, n, bs))
                reproduced += bool(torch.equal(d, emulated))
    shapes = 4 * 5 * 160
    print(f'sweep of {shapes} shapes: {len(wrong)} wrong; the rule names {len(predicted)}; wrong but not named: {sorted(wrong - predicted)[:10]}; '
          f'named but right: {sorted(predicted - wrong)[:10]}')
    print(f'avx512_block_index reproduces bitsandbytes bit for bit on {reproduced} of {shapes} shapes')
    return {'shapes': shapes, 'wrong': len(wrong), 'named': len(predicted), 'rule_holds': wrong == predicted, 'reproduced': reproduced}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--json', help='also write the rows to this JSON file')
    ap.add_argument('--sweep', action='store_true', help='also sweep small 2-D shapes for the rule behind the wrong ones')
    ap.add_argument('--dtypes', default='float32,bfloat16', help='comma-separated output dtypes (default: %(default)s)')
    a = ap.parse_args(argv)
    torch._dynamo.config.disable = True                      # compare the eager kernels
    info = cpu_flags()
    for k, v in info.items(): print(f'{k:22} {v}')
    dtypes = [getattr(torch, d) for d in a.dtypes.split(',')]
    rows = [row(sh, bs, qt, dt) for qt in ('nf4', 'fp4') for dt in dtypes for bs in BLOCKSIZES for sh in SHAPES]
    fmt = lambda v: '  -  ' if v is None else ('yes' if v is True else 'NO' if v is False else f'{v:.4f}')
    print(f"\n{'shape':>10} {'bs':>4} {'type':>4} {'dtype':>8} | {'exact err':>9} | {'dispatch':>8} {'err':>7} | "
          f"{'native':>6} {'err':>7} | {'torch':>5} {'err':>7}")
    for r in rows:
        print(f"{r['shape']:>10} {r['blocksize']:>4} {r['quant_type']:>4} {r['dtype']:>8} | {r['exact_vs_w']:9.4f} | "
              f"{fmt(r['dispatch_exact']):>8} {fmt(r['dispatch_vs_w']):>7} | {fmt(r['native_exact']):>6} {fmt(r['native_vs_w']):>7} | "
              f"{fmt(r['torch_exact']):>5} {fmt(r['torch_vs_w']):>7}")
    bad = [r for r in rows if r['dispatch_exact'] is False]
    named = [r for r in rows if r['dispatch_exact'] is False and not rule(tuple(map(int, r['shape'].split('x'))), r['blocksize'])]
    print(f"wrong where the rule does not say so: {len(named)}; wrong values not reproduced by avx512_block_index: "
          f"{sum(not r['dispatch_as_avx512_index'] for r in bad)}")
    print(f'\n{len(bad)} of {len(rows)} cases: bitsandbytes.functional.dequantize_4bit differs from the exact dequantization'
          + (':' if bad else '.'))
    for r in bad: print(f"  {r['shape']} blocksize {r['blocksize']} {r['quant_type']} {r['dtype']}: max |error| {r['dispatch_vs_w']:.4f} "
                        f"vs exact {r['exact_vs_w']:.4f}")
    sw = sweep() if a.sweep else None
    if a.json:
        with open(a.json, 'w') as f: json.dump({'info': info, 'rows': rows, 'sweep': sw}, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
