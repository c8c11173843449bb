"""GPU measurement helpers for lesson 07's GPU section and `bench_dequant_gpu.py` / `bench_qlora_7b_gpu.py`.

Not part of the `learnft` library: these time and measure (CUDA events, allocator peaks, optimizer-state bytes) and
build a config-shaped Llama for the measurement. The maths they measure lives in `learnft.qlora` (the fused
dequantization) and in bitsandbytes/peft. Import with `benchmarks/` on `sys.path` (the scripts here do; lesson 07
adds it from `learnft.__file__`).
"""
import copy, gc, math, time

import torch
from torch import nn

from learnft.quant import QuantState, dequantize_4bit
from learnft.lora import set_module
from learnft.qlora import dequantize_absmax_fused, dequantize_4bit_fused, dequantize_4bit_state_fused, dequantize_4bit_fused_nested

def cuda_time(fn, iters: int=50, warmup: int=3) -> float:
    "Seconds per call of `fn()` on the GPU, timed with CUDA events after `warmup` calls."
    for _ in range(warmup): fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(iters): fn()
    b.record(); torch.cuda.synchronize()
    return a.elapsed_time(b) / iters / 1e3

_TRITON = {}

def triton_nf4_kernel():
    """learnft's Triton NF4 dequantization kernel (built on first use: triton is imported only here).

    One program dequantizes `BLOCKS` blocks of `BS` values: it undoes the double quantization of their absmax first
    (`code2[q] * absmax2[block // BS2] + offset`, fp32, one value per block), then loads the block's `BS // 2` packed
    bytes, looks both nibbles up in the 16-entry code (high nibble first, as bitsandbytes packs), scales by the block's
    absmax in fp32 and rounds once to the output dtype. Launched with `enable_fp_fusion=False`, so that a multiply and
    the add after it are not contracted into one FMA: each is rounded as bitsandbytes rounds it (bit-identical output).
    `GATHER`: instead of unpacking a byte into two values and interleaving them (`tl.interleave`), every output value
    loads its own byte (`packed[i // 2]`, twice per byte, from the L1 cache) and shifts out its nibble."""
    if 'kernel' in _TRITON: return _TRITON['kernel']
    import triton, triton.language as tl

    @triton.jit
    def nf4_dequant(packed_ptr, qabsmax_ptr, code2_ptr, absmax2_ptr, offset_ptr, code_ptr, out_ptr, n_blocks,
                    BLOCKS: tl.constexpr, BS: tl.constexpr, BS2: tl.constexpr, NESTED: tl.constexpr, GATHER: tl.constexpr):
        blk = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)          # this program's blocks
        inb = blk < n_blocks
        if NESTED:   # double quantization undone in registers: one 8-bit code per block -> its fp32 absmax
            q = tl.load(qabsmax_ptr + blk, mask=inb, other=0).to(tl.int32)
            absmax = tl.load(code2_ptr + q) * tl.load(absmax2_ptr + blk // BS2, mask=inb, other=0.0)
            absmax = absmax + tl.load(offset_ptr)
        else:
            absmax = tl.load(qabsmax_ptr + blk, mask=inb, other=0.0)
        if GATHER:
            i = tl.arange(0, BS)
            p = tl.load(packed_ptr + blk[:, None] * (BS // 2) + (i // 2)[None, :], mask=inb[:, None], other=0).to(tl.int32)
            v = tl.load(code_ptr + ((p >> (4 - 4 * (i % 2))[None, :]) & 0xF))            # [BLOCKS, BS]
        else:
            j = tl.arange(0, BS // 2)
            p = tl.load(packed_ptr + blk[:, None] * (BS // 2) + j[None, :], mask=inb[:, None], other=0).to(tl.int32)
            v = tl.interleave(tl.load(code_ptr + (p >> 4)), tl.load(code_ptr + (p & 0xF)))  # [BLOCKS, BS]: hi, lo, hi, lo ...
        out = (v * absmax[:, None]).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + blk[:, None] * BS + tl.arange(0, BS)[None, :], out, mask=inb[:, None])

    _TRITON['kernel'] = nf4_dequant
    return nf4_dequant

TRITON_DEFAULT = dict(blocks=64, num_warps=4, gather=False)

def dequantize_4bit_triton(packed: torch.Tensor, state: QuantState, out: torch.Tensor=None, blocks: int=None,
                           num_warps: int=None, gather: bool=None) -> torch.Tensor:
    "`dequantize_4bit(packed, state)` by `triton_nf4_kernel` in one launch (nested absmax included); whole blocks only."
    cfg = {**TRITON_DEFAULT, **{k: v for k, v in dict(blocks=blocks, num_warps=num_warps, gather=gather).items() if v is not None}}
    n, bs = math.prod(state.shape), state.blocksize
    if n % bs: raise ValueError(f'the Triton kernel needs whole blocks: {n} values, blocksize {bs}')
    nb = n // bs
    out = torch.empty(state.shape, dtype=state.dtype, device=packed.device) if out is None else out
    if state.nested:
        s2 = state.state2
        args = (state.absmax, s2.code, s2.absmax, state.offset.reshape(1).float(), state.code)
    else: args = (state.absmax, state.code, state.absmax, state.absmax, state.code)   # unused pointers fill the slots
    import triton
    grid = (triton.cdiv(nb, cfg['blocks']),)
    launch = dict(BLOCKS=cfg['blocks'], BS=bs, BS2=state.state2.blocksize if state.nested else 1, NESTED=state.nested,
                  GATHER=cfg['gather'], num_warps=cfg['num_warps'])
    if packed.is_cuda: launch['enable_fp_fusion'] = False
    triton_nf4_kernel()[grid](packed, *args, out, nb, **launch)
    return out

TRITON_SWEEP = [dict(blocks=b, num_warps=w, gather=g) for g in (False, True) for b in (32, 64, 128) for w in (4, 8)]

def dequant_shapes(sizes) -> list:
    "`'4096,11008x4096'` or a list of ints/tuples -> `[(rows, cols), ...]` (an int n is n x n)."
    if isinstance(sizes, str): sizes = [tuple(int(x) for x in s.split('x')) for s in sizes.split(',') if s]
    return [(s, s) if isinstance(s, int) else tuple(s) if len(s) == 2 else (s[0], s[0]) for s in sizes]

# Roofline counting for NF4 + double-quant dequantization, per output value: FLOPs are the floating-point multiplies and
# adds (code * absmax: 1; per block of 64: code2 * absmax2 and + offset: 2/64). "ops" adds the integer and data work a
# GPU core still issues: shift or mask out the nibble (1), look it up (1), multiply (1), round to bf16 (1), store (1).
def dequant_intensity(blocksize: int=64, out_bytes: int=2) -> dict:
    "Arithmetic intensity of NF4 + double-quant dequantization: FLOPs (and all ops) per byte moved, per output value."
    moved = 0.5 + 1 / blocksize + out_bytes          # packed nibble + 8-bit absmax code per block + the written value
    flops = 1 + 2 / blocksize
    ops = 5 + 3 / blocksize                          # + the absmax: look up code2, multiply, add offset
    return {'bytes_per_value': moved, 'flops_per_value': flops, 'ops_per_value': ops,
            'flop_per_byte': flops / moved, 'op_per_byte': ops / moved,
            'counted': 'per output value: FLOPs = code*absmax (1) + (code2*absmax2, +offset)/blocksize; '
                       'ops add shift/mask, lookup, round to bf16, store (5 + 3/blocksize); bytes = 0.5 packed + 1/blocksize absmax code + 2 written'}

def cuda_graph_time(fn, iters: int=50, warmup: int=3):
    "Seconds per call of `fn()` replayed from one CUDA graph of `iters` calls: the device time with no gaps between launches (host overhead left out); None if `fn` cannot be captured."
    try:
        s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(warmup): fn()
        torch.cuda.current_stream().wait_stream(s); torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(iters): fn()
        g.replay(); torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); g.replay(); g.replay(); b.record(); torch.cuda.synchronize()
        del g; return a.elapsed_time(b) / (2 * iters) / 1e3
    except Exception:
        torch.cuda.synchronize(); return None

def nf4_weight(shape) -> tuple:
    "A random bf16 `shape` weight on the GPU packed by bitsandbytes (nf4, blocksize 64, DQ): `(packed, bnb state, learnft QuantState, bitsandbytes' dequantized output, bytes one dequantize moves)`."
    import bitsandbytes.functional as bnbF
    w = torch.randn(*shape, device='cuda', dtype=torch.bfloat16)
    packed, bstate = bnbF.quantize_4bit(w, blocksize=64, quant_type='nf4', compress_statistics=True)
    state = QuantState.from_bnb(bstate); del w
    moved = packed.numel() + state.absmax.numel() + math.prod(shape) * 2    # bytes read (codes + 8-bit constants) + bf16 written
    return packed, bstate, state, bnbF.dequantize_4bit(packed, bstate), moved

def dequant_benchmark(size: int=16384, iters: int=50, shape=None, triton: bool=True, triton_config: dict=None, graphs: bool=False) -> dict:
    "bitsandbytes' CUDA dequantize vs learnft's (eager, `torch.compile`-fused, Triton) on a `size`² (or `shape`) bf16 weight, nf4 + DQ: seconds, GB/s, copy bandwidth (`graphs`: also timed as CUDA-graph replays, no launch gaps)."
    import bitsandbytes.functional as bnbF
    rows_, cols = shape or (size, size)
    packed, bstate, state, ref, moved = nf4_weight((rows_, cols))
    one = torch.compile(dequantize_4bit_fused_nested, fullgraph=True, dynamic=False)   # one kernel: nested absmax, unpack, look up, scale
    two = [torch.compile(dequantize_absmax_fused, fullgraph=True, dynamic=False), torch.compile(dequantize_4bit_fused, fullgraph=True, dynamic=False)]
    s2 = state.state2
    fused = lambda: dequantize_4bit_state_fused(packed, state, one)
    fused2 = lambda: two[1](packed, two[0](state.absmax, s2.code, s2.absmax, state.offset, s2.blocksize), state.code, 64, torch.bfloat16).view(state.shape)
    impls = {'bitsandbytes (CUDA kernel)': lambda: bnbF.dequantize_4bit(packed, bstate),
             'learnft eager (lesson 06)': lambda: dequantize_4bit(packed, state),
             'learnft fused (torch.compile)': fused,
             'learnft fused, absmax separately': fused2}
    tout = torch.empty_like(ref)
    if triton: impls['learnft Triton kernel'] = lambda: dequantize_4bit_triton(packed, state, tout, **(triton_config or {}))
    diffs, identical = {}, {}
    for name, f in impls.items():
        got = f(); diffs[name] = (got.float() - ref.float()).abs().max().item()
        identical[name] = bool(torch.equal(got.view(torch.int16), ref.view(torch.int16)))
    n = rows_ * cols
    out = torch.empty_like(ref)
    copy_t = cuda_time(lambda: out.copy_(ref), iters); copy_g = cuda_graph_time(lambda: out.copy_(ref), iters) if graphs else None
    copy_bw = 2 * n * 2 / copy_t / 1e9
    rows = []
    for name, f in impls.items():
        eager = 'eager' in name
        t = cuda_time(f, iters if not eager else max(5, iters // 10))
        g = cuda_graph_time(f, iters) if graphs and not eager else None
        rows.append({'name': name, 'ms': t * 1e3, 'GB/s': moved / t / 1e9, 'max_diff': diffs[name], 'bit_identical': identical[name],
                     **({'ms_graph': g * 1e3, 'GB/s_graph': moved / g / 1e9} if g else {})})
    return {'size': rows_ if rows_ == cols else f'{rows_}x{cols}', 'shape': [rows_, cols], 'bytes_moved': moved, 'copy_GB/s': copy_bw,
            **({'copy_GB/s_graph': 2 * n * 2 / copy_g / 1e9} if copy_g else {}), 'rows': rows,
            **({'triton_config': {**TRITON_DEFAULT, **(triton_config or {})}} if triton else {})}

def triton_sweep(shape=(16384, 16384), iters: int=30, configs=None) -> list:
    "GB/s of `dequantize_4bit_triton` for each launch config (`TRITON_SWEEP`) on a `shape` weight, best first; each checked bit-identical to bitsandbytes."
    packed, _, state, ref, moved = nf4_weight(shape)
    out = torch.empty_like(ref)
    res = []
    for c in configs or TRITON_SWEEP:
        same = torch.equal(dequantize_4bit_triton(packed, state, out, **c).view(torch.int16), ref.view(torch.int16))
        t = cuda_time(lambda: dequantize_4bit_triton(packed, state, out, **c), iters)
        res.append({**c, 'ms': t * 1e3, 'GB/s': moved / t / 1e9, 'bit_identical': bool(same)})
    return sorted(res, key=lambda r: -r['GB/s'])

def print_dequant_table(res: dict):
    "The table of `dequant_benchmark`: ms, GB/s, speed vs bitsandbytes, fraction of the copy bandwidth."
    r0, c0 = res.get('shape', (res['size'], res['size']))
    print(f"weight {r0}x{c0} nf4, blocksize 64, double quant: {res['bytes_moved'] / 1e6:,.0f} MB moved per dequantize")
    print(f"device copy bandwidth (read + write of the bf16 output size): {res['copy_GB/s']:,.0f} GB/s\n")
    print(f"{'dequantize':32} {'ms':>8} {'GB/s':>8} {'vs bnb':>8} {'of copy bw':>11} {'max |diff| vs bnb':>18}")
    base = res['rows'][0]['ms']
    for r in res['rows']:
        same = '  (bit-identical)' if r.get('bit_identical') else ''
        print(f"{r['name']:32} {r['ms']:>8.3f} {r['GB/s']:>8,.0f} {base / r['ms']:>7.2f}x {r['GB/s'] / res['copy_GB/s']:>10.0%} {r['max_diff']:>18.2e}{same}")
    if 'copy_GB/s_graph' in res:
        cg = res['copy_GB/s_graph']
        print(f"\nreplayed from a CUDA graph (no gaps between launches): copy {cg:,.0f} GB/s")
        for r in res['rows']:
            if 'GB/s_graph' in r: print(f"{r['name']:32} {r['ms_graph']:>8.3f} {r['GB/s_graph']:>8,.0f} {r['GB/s_graph'] / cg:>10.0%} of the graph-timed copy")

def llama_7b_config(num_hidden_layers: int=32, **kwargs):
    "A `LlamaConfig` of Llama-2-7B's shape (hidden 4096, MLP 11008, 32 heads, vocab 32000; 6.74 B parameters at 32 layers)."
    from transformers import LlamaConfig
    shape = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=num_hidden_layers,
                 num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, use_cache=False)
    return LlamaConfig(**{**shape, **kwargs})

def _bnb_quantize_linears(module: nn.Module, device, compute_dtype: torch.dtype):
    "Swap every `nn.Linear` inside `module` for a bitsandbytes nf4 + double-quant `Linear4bit`, quantized as it moves to `device`."
    import bitsandbytes as bnb
    for name, lin in [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]:
        q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None, compute_dtype=compute_dtype,
                              compress_statistics=True, quant_type='nf4', device='meta')
        q.weight = bnb.nn.Params4bit(lin.weight.data, requires_grad=False, compress_statistics=True, quant_type='nf4').to(device)
        if lin.bias is not None: q.bias = nn.Parameter(lin.bias.data, requires_grad=False)
        set_module(module, name, q)

FINETUNE_BUILDS = ('qlora', 'lora', 'full')

def build_llama_for_finetune(config, method: str='qlora', device='cuda', r: int=64, alpha: float=16,
                             dtype: torch.dtype=torch.bfloat16, gradient_checkpointing: bool=True) -> nn.Module:
    "A config-built Llama (random weights, `dtype`) ready to train with `method`: 'qlora' (decoder layers built one at a time and quantized to bitsandbytes nf4+DQ at once, so the 16-bit model never exists), 'lora' (bf16 base) or 'full'; peft LoRA r/alpha on all linear layers."
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer
    if method not in FINETUNE_BUILDS: raise ValueError(f'method={method!r} is not valid; allowed: {FINETUNE_BUILDS}')
    config = copy.deepcopy(config); layers = config.num_hidden_layers
    old = torch.get_default_dtype(); torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            if method != 'qlora': model = LlamaForCausalLM(config)
            else:
                config.num_hidden_layers = 0
                model = LlamaForCausalLM(config)          # embeddings, final norm, head: kept in `dtype`
                for i in range(layers):
                    layer = LlamaDecoderLayer(config, layer_idx=i)   # one layer's 16-bit weights at a time ...
                    _bnb_quantize_linears(layer, device, dtype)      # ... quantized before the next is built
                    model.model.layers.append(layer)
                model.config.num_hidden_layers = layers
    finally: torch.set_default_dtype(old)
    if method != 'full':
        from peft import LoraConfig, get_peft_model
        model.requires_grad_(False)
        model.enable_input_require_grads()   # so checkpointed layers see an input that needs grad (prepare_model_for_kbit_training does this)
        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules='all-linear', task_type='CAUSAL_LM'))
    if gradient_checkpointing: model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': False})
    return model.train()

def optimizer_state_bytes(opt) -> dict:
    "Bytes of per-parameter optimizer state: `{'gpu': ..., 'paged': ...}` (bitsandbytes' paged states live in CUDA managed memory); code tables and step counters left out."
    out = {'gpu': 0, 'paged': 0}
    for s in opt.state.values():
        for k, v in s.items():
            if torch.is_tensor(v) and v.numel() > 1 and not k.startswith('qmap'):
                out['paged' if getattr(v, 'is_paged', False) else 'gpu'] += v.numel() * v.element_size()
    return out

def train_step_memory(model: nn.Module, optimizer_cls=torch.optim.AdamW, seq_len: int=512, batch_size: int=1, steps: int=3,
                      lr: float=1e-4, **opt_kwargs) -> dict:
    "Train `steps` steps on random tokens with a fresh `optimizer_cls`; weights' bytes, step peak (PyTorch allocator), optimizer state, GPU memory outside PyTorch, median s/step."
    dev = next(model.parameters()).device; cuda = dev.type == 'cuda'
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer_cls(params, lr=lr, **opt_kwargs)
    ids = torch.randint(0, model.config.vocab_size, (batch_size, seq_len), device=dev)
    def outside():   # device memory in use that PyTorch's caching allocator does not hold (CUDA context, managed memory)
        free, total = torch.cuda.mem_get_info(); return total - free - torch.cuda.memory_reserved()
    if cuda:
        gc.collect(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
        weights, outside0 = torch.cuda.memory_allocated(), outside()
    times = []
    for _ in range(steps):
        t = time.time()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        if cuda: torch.cuda.synchronize()
        times.append(time.time() - t)
    res = {'optimizer': type(opt).__name__, 'trainable': sum(p.numel() for p in params), 'loss': loss.item(),
           'step_s': sorted(times[1:] or times)[len(times[1:] or times) // 2], **{f'state_{k}': v for k, v in optimizer_state_bytes(opt).items()}}
    if cuda: res.update(weights=weights, peak=torch.cuda.max_memory_allocated(), outside=outside() - outside0)
    del opt, params; gc.collect()
    if cuda: torch.cuda.empty_cache()
    return res
