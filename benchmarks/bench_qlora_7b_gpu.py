"""GPU: peak memory and speed of one training step of a 7B-shaped Llama — QLoRA vs LoRA-bf16 vs full bf16.

XTuner's headline: a 7B model QLoRA-fine-tuned on one 8 GB GPU. This builds a Llama-2-7B-shaped model from a config
(random weights: memory and speed do not depend on the values), then for each method runs a few optimizer steps at
sequence length 512, batch 1, with gradient checkpointing, LoRA r=64 / alpha=16 on all linear layers (the QLoRA
paper's defaults), and reports the peak memory the step allocates and the trained tokens/s, side by side, as ratios.

QLoRA: every decoder linear becomes a bitsandbytes nf4 + double-quant `Linear4bit` as soon as its layer is built
(layer by layer on the GPU), so the bf16 weights of the whole model never exist at once.

    python benchmarks/bench_qlora_7b_gpu.py [--layers 32] [--steps 4]      # needs CUDA, bitsandbytes, peft
"""
import argparse, gc, time
import torch


def _quantize_linears(layer, dev):
    "Swap every nn.Linear of one decoder layer for a bitsandbytes nf4 + double-quant Linear4bit (quantized on the GPU)."
    import bitsandbytes as bnb
    for name, mod in list(layer.named_modules()):
        if isinstance(mod, torch.nn.Linear):
            parent_name, leaf = name.rsplit('.', 1)
            q = bnb.nn.Linear4bit(mod.in_features, mod.out_features, bias=False, compute_dtype=torch.bfloat16,
                                  compress_statistics=True, quant_type='nf4')
            q.weight = bnb.nn.Params4bit(mod.weight.data, requires_grad=False, compress_statistics=True,
                                         quant_type='nf4').to(dev)
            setattr(layer.get_submodule(parent_name), leaf, q)


def build(method, layers, dev='cuda'):
    "A Llama-2-7B-shaped model (random init, bf16) on the GPU; for QLoRA its decoder layers are built and quantized one by one."
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer
    cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=layers,
                      num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, use_cache=False)
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(dev):
            if method != 'qlora': model = LlamaForCausalLM(cfg)
            else:
                cfg.num_hidden_layers = 0
                model = LlamaForCausalLM(cfg)
                for i in range(layers):
                    layer = LlamaDecoderLayer(cfg, layer_idx=i)
                    _quantize_linears(layer, dev)
                    model.model.layers.append(layer)
                    torch.cuda.empty_cache()
                model.config.num_hidden_layers = layers
    finally: torch.set_default_dtype(torch.float32)
    if method in ('qlora', 'lora'):
        from peft import LoraConfig, get_peft_model
        for p in model.parameters(): p.requires_grad_(False)
        model.enable_input_require_grads()
        model = get_peft_model(model, LoraConfig(r=64, lora_alpha=16, lora_dropout=0.0, target_modules='all-linear',
                                                 task_type='CAUSAL_LM'))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': False})
    model.train()
    return model


def step_stats(method, layers, steps, seq=512):
    torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    t0 = time.time(); model = build(method, layers); build_s = time.time() - t0
    build_peak = torch.cuda.max_memory_allocated()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, 32000, (1, seq), device='cuda')
    weights = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps):
        torch.cuda.synchronize(); t = time.time()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize(); times.append(time.time() - t)
    peak = torch.cuda.max_memory_allocated()
    n_train = sum(p.numel() for p in params)
    del model, opt, params; gc.collect(); torch.cuda.empty_cache()
    step = sorted(times[1:])[len(times[1:]) // 2] if len(times) > 1 else times[0]
    return dict(method=method, trainable=n_train, weights_gib=weights / 2**30, peak_gib=peak / 2**30,
                build_peak_gib=build_peak / 2**30, step_s=step, tok_s=seq / step, build_s=build_s)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--layers', type=int, default=32); ap.add_argument('--steps', type=int, default=4)
    ap.add_argument('--methods', default='qlora,lora,full'); a = ap.parse_args()
    assert torch.cuda.is_available(), 'this benchmark needs a CUDA GPU'
    print(f'{torch.cuda.get_device_name()}  torch {torch.__version__}  7B-shaped Llama, {a.layers} layers, seq 512, batch 1, '
          f'gradient checkpointing, LoRA r=64 all-linear, AdamW')
    rows = [step_stats(m, a.layers, a.steps) for m in a.methods.split(',')]
    base = rows[0]
    print(f"\n{'method':8} {'trainable':>13} {'weights GiB':>12} {'peak GiB':>9} {'build peak':>11} {'step s':>7} {'tok/s':>7} {'peak vs qlora':>14}")
    for r in rows:
        print(f"{r['method']:8} {r['trainable']:>13,} {r['weights_gib']:>12.2f} {r['peak_gib']:>9.2f} {r['build_peak_gib']:>11.2f} "
              f"{r['step_s']:>7.3f} {r['tok_s']:>7.0f} {r['peak_gib']/base['peak_gib']:>13.2f}x")
    q = next((r for r in rows if r['method'] == 'qlora'), None)
    if q: print(f"\nQLoRA step peak {q['peak_gib']:.2f} GiB: {'fits' if q['peak_gib'] < 8 else 'does NOT fit'} in 8 GB")
