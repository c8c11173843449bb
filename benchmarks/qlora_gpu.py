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

def dequant_benchmark(size: int=16384, iters: int=50) -> dict:
    "bitsandbytes' CUDA dequantize vs learnft's (eager and `torch.compile`-fused) on a `size`² bf16 weight, nf4 + DQ: seconds, GB/s, copy bandwidth."
    import bitsandbytes.functional as bnbF
    w = torch.randn(size, size, device='cuda', dtype=torch.bfloat16)
    packed, bstate = bnbF.quantize_4bit(w, blocksize=64, quant_type='nf4', compress_statistics=True)
    state = QuantState.from_bnb(bstate); del w
    ref = bnbF.dequantize_4bit(packed, bstate)
    one = torch.compile(dequantize_4bit_fused_nested, fullgraph=True)   # one kernel: nested absmax, unpack, look up, scale
    two = [torch.compile(dequantize_absmax_fused, fullgraph=True), torch.compile(dequantize_4bit_fused, fullgraph=True)]
    s2 = state.state2
    fused = lambda: dequantize_4bit_state_fused(packed, state, one)
    fused2 = lambda: two[1](packed, two[0](state.absmax, s2.code, s2.absmax, state.offset, s2.blocksize), state.code, 64, torch.bfloat16).view(state.shape)
    impls = {'bitsandbytes (CUDA kernel)': lambda: bnbF.dequantize_4bit(packed, bstate),
             'learnft eager (lesson 06)': lambda: dequantize_4bit(packed, state),
             'learnft fused (torch.compile)': fused,
             'learnft fused, absmax separately': fused2}
    diffs = {name: (f().float() - ref.float()).abs().max().item() for name, f in impls.items()}
    n = size * size
    moved = packed.numel() + state.absmax.numel() + n * 2    # bytes read (codes + 8-bit constants) + bf16 written
    out = torch.empty_like(ref)
    copy_bw = 2 * n * 2 / cuda_time(lambda: out.copy_(ref), iters) / 1e9
    rows = []
    for name, f in impls.items():
        t = cuda_time(f, iters if 'eager' not in name else max(5, iters // 10))
        rows.append({'name': name, 'ms': t * 1e3, 'GB/s': moved / t / 1e9, 'max_diff': diffs[name]})
    return {'size': size, 'bytes_moved': moved, 'copy_GB/s': copy_bw, 'rows': rows}

def print_dequant_table(res: dict):
    "The table of `dequant_benchmark`: ms, GB/s, speed vs bitsandbytes, fraction of the copy bandwidth."
    print(f"weight {res['size']}x{res['size']} nf4, blocksize 64, double quant: {res['bytes_moved'] / 1e6:,.0f} MB moved per dequantize")
    print(f"device copy bandwidth (read + write of the bf16 output size): {res['copy_GB/s']:,.0f} GB/s\n")
    print(f"{'dequantize':32} {'ms':>8} {'GB/s':>8} {'vs bnb':>8} {'of copy bw':>11} {'max |diff| vs bnb':>18}")
    base = res['rows'][0]['ms']
    for r in res['rows']:
        print(f"{r['name']:32} {r['ms']:>8.3f} {r['GB/s']:>8,.0f} {base / r['ms']:>7.2f}x {r['GB/s'] / res['copy_GB/s']:>10.0%} {r['max_diff']:>18.2e}")

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
