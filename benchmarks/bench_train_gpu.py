"""GPU: `learnft train` on a config-built model of realistic size — one process vs DeepSpeed ZeRO-2 on N GPUs; QLoRA and LoRA-bf16.

Builds a Llama-shaped model with SmolLM2's vocabulary from a config (random weights, saved once in bf16), then runs
`learnft train CONFIG` — the same command a learner runs — for each mode, reading back per-GPU peak memory and trained
tokens/s (steps 1-2 untimed). Rows: the self-cognition data packed to `--seq` tokens.

    python benchmarks/bench_train_gpu.py --shape 1b --nproc 1           # needs CUDA, bitsandbytes, deepspeed
    python benchmarks/bench_train_gpu.py --shape 1b --nproc 1,2,4       # scaling on several GPUs of one host

On the course's `device` machine, bring the wheels first: `bash tools/device_wheels.sh` here, then on the device
`bash tools/device_wheels.sh --install` (see that script).
"""
import argparse, json, os, subprocess, sys, tempfile
from pathlib import Path

SHAPES = {  # Llama shapes (hidden, intermediate, layers, heads, kv heads)
    '1b': dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4),
    '3b': dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8),
    '7b': dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32),
}
MODES = {'qlora': dict(bits=4, quant_type='nf4', double_quant=True, compute_dtype='bfloat16'),
         'lora-bf16': dict(bits=16, compute_dtype='bfloat16')}


def build_model(shape: str, out: Path, tokenizer: str) -> Path:
    "A config-built model folder (bf16 safetensors + the SmolLM2 tokenizer)."
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM
    from learnft.models import smollm2_config
    if (out/'config.json').exists(): return out
    s = SHAPES[shape]
    cfg = smollm2_config(head_dim=s['hidden_size'] // s['num_attention_heads'], tie_word_embeddings=False, **s)
    torch.manual_seed(0)
    with torch.device('cuda' if torch.cuda.is_available() else 'cpu'):
        m = LlamaForCausalLM(cfg).to(torch.bfloat16)
    m.save_pretrained(out); AutoTokenizer.from_pretrained(tokenizer).save_pretrained(out)
    del m; torch.cuda.empty_cache()
    return out


def run(model_dir: Path, mode: str, nproc: int, deepspeed: bool, a, work: Path) -> dict:
    import yaml
    cfg = dict(model=dict(path=str(model_dir)), template='smollm2',
               data=dict(builder='self_cognition', builder_args=dict(repeats=40, general_repeats=20), max_length=a.seq,
                         pack_to_max_length=True),
               quantization=MODES[mode], lora=dict(r=64, lora_alpha=16, lora_dropout=0.1, target_modules='all-linear'),
               optim=dict(lr=2e-4), train=dict(batch_size=a.batch, max_steps=a.steps, save_steps=10 ** 6,
                                                gradient_checkpointing=a.checkpointing),
               eval=dict(prompts=[]))
    name = f'{mode}-{nproc}{"-ds" if deepspeed else ""}'
    (work/f'{name}.yaml').write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, '-m', 'learnft.cli', 'train', str(work/f'{name}.yaml'), '--work-dir', str(work/name)]
    if deepspeed: cmd += ['--deepspeed', 'zero2']
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'NPROC_PER_NODE': str(nproc)})
    lines = [l for l in r.stdout.splitlines() if l.startswith('{"work_dir"')]
    if r.returncode or not lines: return {'error': (r.stdout[-1500:] + r.stderr[-2500:])}
    summary = json.loads(lines[-1])
    from learnft.trainer import read_log
    recs = read_log(work/name)[2:]
    summary['tok_s'] = sum(x['tokens'] for x in recs) / max(sum(x['seconds'] for x in recs), 1e-9)
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--shape', choices=list(SHAPES), default='1b'); ap.add_argument('--nproc', default='1')
    ap.add_argument('--modes', default='qlora,lora-bf16'); ap.add_argument('--steps', type=int, default=8)
    ap.add_argument('--seq', type=int, default=512); ap.add_argument('--batch', type=int, default=4)
    ap.add_argument('--checkpointing', action='store_true'); ap.add_argument('--tokenizer', default=None)
    ap.add_argument('--work', default=None)
    a = ap.parse_args()
    import torch
    if not torch.cuda.is_available(): sys.exit('this benchmark needs CUDA')
    a.tokenizer = a.tokenizer or os.environ.get('LEARNFT_TOKENIZER')     # a folder with SmolLM2's tokenizer files
    if a.tokenizer is None:
        from learnft.models import smollm2_path
        a.tokenizer = str(smollm2_path())
    work = Path(a.work or tempfile.mkdtemp(prefix='bench-train-gpu-'))
    model_dir = build_model(a.shape, work/f'model-{a.shape}', a.tokenizer)
    gpus = [int(n) for n in a.nproc.split(',')]
    print(f'# {a.shape}-shaped Llama (config-built), seq {a.seq}, micro-batch {a.batch} per GPU, {a.steps} steps (2 untimed), '
          f'gradient checkpointing {"on" if a.checkpointing else "off"}; {torch.cuda.get_device_name()}, torch {torch.__version__}')
    print(f"{'mode':<11}{'run':<22}{'GPUs':>5}{'peak GiB/GPU':>14}{'tokens/s':>11}{'tok/s/GPU':>11}{'scaling eff.':>14}")
    for mode in a.modes.split(','):
        base = None
        for n, ds in [(1, False)] + [(n, True) for n in gpus]:
            r = run(model_dir, mode, n, ds, a, work)
            label = f"learnft train{' --deepspeed zero2' if ds else ''}"
            if 'error' in r: print(f"{mode:<11}{label:<22}{n:>5}  failed: {r['error'][-600:]!r}"); continue
            per = r['tok_s'] / n
            if n == 1 and ds: base = per
            eff = f'{per / base:>14.2f}' if base and ds else f"{'':>14}"
            print(f"{mode:<11}{label:<22}{n:>5}{r.get('peak_gpu_mib_per_rank', 0) / 1024:>14.2f}{r['tok_s']:>11.0f}{per:>11.0f}{eff}")


if __name__ == '__main__':
    main()
