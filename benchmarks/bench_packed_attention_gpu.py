"""GPU: what a packed batch's attention costs — lesson 04's block-diagonal mask and varlen `cu_seqlens` against TRL's padding-free batches.

One forward + backward of a QLoRA model (config-built 1B-shaped Llama, NF4 + double quant, the lab's LoRA on the attention
projections) on the same 4 packed rows of the self-cognition data, peak GPU memory above the model and seconds per step,
for each way of handing the packing to the model, with and without bf16 autocast:

- learnft's block-diagonal 4-D mask + per-sample positions (lesson 04), in the activations' dtype (bf16) — and, to show
  why that matters, in float32 next to bf16 queries: the memory-efficient kernel returns NaN;
- learnft's varlen: one flattened row + `cu_seqlens`, no mask (lesson 04, `data.use_varlen_attn`);
- positions only, no mask (TRL's padding-free batches under sdpa: samples see each other), rows and flattened;
- plain causal, no positions (naive packing), the floor.

    python benchmarks/bench_packed_attention_gpu.py [--shape 1b] [--seq 512] [--batch 4]   # needs CUDA and bitsandbytes
"""
import argparse, copy, os, sys, tempfile, time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--shape', default='1b'); ap.add_argument('--seq', type=int, default=512); ap.add_argument('--batch', type=int, default=4)
    a = ap.parse_args()
    import torch
    sys.path.insert(0, str(Path(__file__).parent)); from bench_train_gpu import build_model
    from learnft import config, trainer
    from learnft.packing import collate_packed, collate_varlen, use_varlen_attention
    tok = os.environ.get('LEARNFT_TOKENIZER')
    if tok is None:
        from learnft.models import smollm2_path; tok = str(smollm2_path())
    path = build_model(a.shape, Path(tempfile.mkdtemp())/'m', tok)
    cfg = copy.deepcopy(config.CONFIGS['smollm2_135m_qlora_self_cognition'])
    cfg['model'] = dict(path=str(path)); cfg['data']['max_length'] = a.seq
    cfg['data']['builder_args'].update(repeats=20, general_repeats=10)
    cfg = config.validate_config(cfg)
    model, tk = trainer.load_model(path, 4, 'nf4', True, 'bfloat16', device=torch.device('cuda'))
    rows = trainer.build_dataset(cfg, tk, verbose=False)[:a.batch]
    model = use_varlen_attention(trainer.add_lora(model, cfg['lora'])); model.train()
    cuda = lambda b: {k: v.cuda() if torch.is_tensor(v) else v for k, v in b.items()}
    mask = collate_packed(rows, tk.pad_token_id, mask_dtype=torch.bfloat16); mask.pop('cu_seqlens'); mask = cuda(mask)
    mask32 = {**mask, 'attention_mask': collate_packed(rows, tk.pad_token_id)['attention_mask'].cuda()}   # float32, as before the fix
    var = cuda(collate_varlen(rows, tk.pad_token_id))
    pos = {k: mask[k] for k in ('input_ids', 'labels', 'position_ids')}
    ways = [('block-diagonal mask + positions', mask), ('varlen: one row + cu_seqlens', var),
            ('the same mask in float32 (mismatch)', mask32),
            ('positions only, rows (no mask)', pos), ('positions only, one flat row', {k: v.reshape(1, -1) for k, v in pos.items()}),
            ('plain causal (naive packing)', {k: pos[k] for k in ('input_ids', 'labels')})]

    def step(batch, autocast):
        torch.cuda.synchronize(); torch.cuda.empty_cache(); base = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=autocast):
            loss = model(**batch).loss
        loss.backward(); torch.cuda.synchronize()
        model.zero_grad(set_to_none=True)
        return loss.item(), (torch.cuda.max_memory_allocated() - base) / 2**20, time.perf_counter() - t

    print(f'# {a.shape}-shaped Llama, QLoRA nf4+DQ (compute bf16, unquantized weights bf16), LoRA r16 on q/k/v/o; '
          f'{a.batch} packed rows of <= {a.seq} tokens ({sum(len(r["seq_lens"]) for r in rows)} samples); torch {torch.__version__}')
    print(f"{'autocast':<10}{'packing handed over as':<36}{'loss':>9}{'peak MiB':>10}{'seconds':>9}{'mem vs mask':>13}")
    for ac in (False, True):
        ref = None
        for name, b in ways:
            try: step(b, ac); r = step(b, ac)       # the second call is timed (warm)
            except Exception as e: print(f"{'bf16' if ac else 'off':<10}{name:<36} failed: {type(e).__name__}: {str(e)[:120]}"); continue
            ref = ref or r
            print(f"{'bf16' if ac else 'off':<10}{name:<36}{r[0]:>9.4f}{r[1]:>10.0f}{r[2]:>9.3f}{r[1] / ref[1]:>13.2f}")
    print('loss: the same for mask and varlen (samples kept apart); positions-only and causal differ (samples read each other)')
    print('mem vs mask: peak memory against the first row of the same autocast setting')


if __name__ == '__main__':
    main()
