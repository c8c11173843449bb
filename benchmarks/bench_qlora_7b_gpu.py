"""GPU: peak memory and speed of one training step of a 7B-shaped Llama — QLoRA vs LoRA-bf16 vs full bf16.

XTuner's headline: a 7B model QLoRA-fine-tuned on one 8 GB GPU. This builds a Llama-2-7B-shaped model from a config
(random weights: memory and speed do not depend on the values), then for each method runs a few optimizer steps at
sequence length 512, batch 1, with gradient checkpointing, LoRA r=64 / alpha=16 on all linear layers (the QLoRA
paper's defaults), and reports the peak memory the step allocates and the trained tokens/s, side by side, as ratios.

QLoRA: every decoder linear becomes a bitsandbytes nf4 + double-quant `Linear4bit` as soon as its layer is built
(layer by layer on the GPU), so the bf16 weights of the whole model never exist at once. The code is
`qlora_gpu.build_llama_for_finetune` + `train_step_memory` (beside this script; lesson 07's GPU section runs the same).

    python benchmarks/bench_qlora_7b_gpu.py [--layers 32] [--steps 4] [--optimizer AdamW|AdamW8bit|PagedAdamW|PagedAdamW8bit]
"""
import argparse, gc, time
import torch
from qlora_gpu import llama_7b_config, build_llama_for_finetune, train_step_memory

if __name__ == '__main__':
    ap = argparse.ArgumentParser(); ap.add_argument('--layers', type=int, default=32); ap.add_argument('--steps', type=int, default=4)
    ap.add_argument('--methods', default='qlora,lora,full'); ap.add_argument('--optimizer', default='AdamW'); a = ap.parse_args()
    assert torch.cuda.is_available(), 'this benchmark needs a CUDA GPU'
    if a.optimizer == 'AdamW': opt = torch.optim.AdamW
    else:
        import bitsandbytes as bnb
        opt = getattr(bnb.optim, a.optimizer)
    print(f'{torch.cuda.get_device_name()}  torch {torch.__version__}  7B-shaped Llama, {a.layers} layers, seq 512, batch 1, '
          f'gradient checkpointing, LoRA r=64 all-linear, {a.optimizer}')
    cfg, rows = llama_7b_config(a.layers), []
    for m in a.methods.split(','):
        torch.cuda.reset_peak_memory_stats()
        t = time.time(); model = build_llama_for_finetune(cfg, m, 'cuda'); build_s = time.time() - t
        rows.append({'method': m, 'build_s': build_s, 'build_peak': torch.cuda.max_memory_allocated(),
                     **train_step_memory(model, opt, seq_len=512, steps=a.steps)})
        del model; gc.collect(); torch.cuda.empty_cache()
    base, G = rows[0], 2**30
    print(f"\n{'method':8} {'trainable':>13} {'weights GiB':>12} {'peak GiB':>9} {'build peak':>11} {'step s':>7} {'tok/s':>7} {'peak vs first':>14}")
    for r in rows:
        print(f"{r['method']:8} {r['trainable']:>13,} {r['weights'] / G:>12.2f} {r['peak'] / G:>9.2f} {r['build_peak'] / G:>11.2f} "
              f"{r['step_s']:>7.3f} {512 / r['step_s']:>7.0f} {r['peak'] / base['peak']:>13.2f}x")
    q = next((r for r in rows if r['method'] == 'qlora'), None)
    if q: print(f"\nQLoRA step peak {q['peak'] / G:.2f} GiB: {'fits' if q['peak'] < 8e9 else 'does NOT fit'} in 8 GB")
