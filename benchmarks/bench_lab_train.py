"""Training throughput and peak memory: `learnft train` vs the usual stack, TRL's `SFTTrainer` + peft + bitsandbytes.

Same model (the bundled SmolLM2-135M-Instruct, or a config-built one; 4-bit NF4 + double quantization, 4-bit matmuls
computed in fp32 on a CPU and bf16 on a GPU), same rows (the
self-cognition lab's data, rendered by learnft with the `smollm2` template and handed to TRL as prompt/completion text,
so both sides see the same tokens and train on the same completion tokens), same max_length, the lab's LoRA config (r 16, α 32,
dropout 0.05, attention projections), AdamW, learning rate, schedule, batch and accumulation; packing on and off.
Each side runs in a fresh process of its own, so the peak resident memory (ru_maxrss) is its own; the first 2 steps
are warm-up and not timed. Unpacked, TRL is handed the samples in the order learnft's loop draws them and reads them
sequentially, so both sides train on the same batches. Throughput is trained (loss-carrying) tokens per second; a step's time runs from the end of
the previous optimizer step to the end of this one, so batching the data counts on both sides.

    python benchmarks/bench_lab_train.py [--steps 20] [--threads 2] [--model smollm2|tiny]
    python benchmarks/bench_lab_train.py --shape 1b --seq 512 --batch 4        # on a GPU: a config-built 1B-shaped model

Set alike on both sides, because TRL's defaults differ from TrainingArguments': gradient checkpointing (TRL: on; here off
unless --checkpointing) and bf16 autocast (TRL: on; here --precision, default bf16 on a GPU and fp32 on a CPU, where
autocast to bf16 is slow without AMX).

TRL packs with its default 'bfd' strategy, which turns on padding-free batches (position_ids, no attention mask): with
the CPU's sdpa/eager attention that lets packed samples attend to each other (TRL warns), where learnft's packing keeps
the block-diagonal mask of lesson 04. The table notes it; the speed comparison is still the same tokens through the
same model.
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path

CONFIG = 'smollm2_135m_qlora_self_cognition'


def _cfg(packing, steps, threads, model, seq=None, batch=None):
    import copy, torch
    from learnft import config, trainer
    cfg = copy.deepcopy(config.CONFIGS[CONFIG])
    if model == 'tiny': cfg['model'] = dict(path='tiny', tiny=dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128))
    elif model != 'smollm2': cfg['model'] = dict(path=model)            # a model folder (e.g. built by bench_train_gpu.py)
    if torch.cuda.is_available(): cfg['quantization']['compute_dtype'] = 'bfloat16'
    if seq: cfg['data']['max_length'] = seq
    if batch: cfg['train']['batch_size'] = batch
    for src in cfg['data']['sources']:                                  # enough rows for any sequence length
        if src['builder'] == 'identity': src['builder_args']['repeats'] = 20
        else: src['repeats'] = 10
    cfg['data']['pack_to_max_length'] = packing
    cfg['train'].update(max_steps=steps, save_steps=10 ** 6, num_threads=threads,
                        gradient_checkpointing=os.environ.get('BENCH_CHECKPOINTING') == '1',
                        mixed_precision='bf16' if os.environ.get('BENCH_PRECISION') == 'bf16' else None)
    cfg['eval']['prompts'] = []
    return config.validate_config(cfg)


def worker_ours(packing, steps, threads, model, seq=None, batch=None, varlen=False):
    from learnft import config, trainer
    cfg = _cfg(packing, steps, threads, model, seq, batch)
    cfg['data']['use_varlen_attn'] = varlen
    with tempfile.TemporaryDirectory() as d:
        trainer.train(cfg, Path(d)/'run', verbose=False)
        recs = trainer.read_log(Path(d)/'run')[2:]
    return {'tokens': sum(r['tokens'] for r in recs), 'seconds': sum(r['seconds'] for r in recs), 'steps': len(recs)}


def sft_rows(rows, tok) -> list:
    "learnft's rows as TRL prompt/completion pairs: the completion ends at the last trained token (<|im_end|>, SmolLM2's EOS: TRL adds no second one)."
    data = []
    for r in rows:
        trained = [i for i, l in enumerate(r['labels']) if l != -100]
        data.append({'prompt': tok.decode(r['input_ids'][:trained[0]]), 'completion': tok.decode(r['input_ids'][trained[0]:trained[-1] + 1])})
    return data


def run_sft(model, tok, data, cfg, steps, packing, output_dir, **trainer_kw) -> dict:
    """TRL's `SFTTrainer` on `data` with learnft's recipe `cfg` (the same optimizer, schedule, batch, precision and
    checkpointing), each optimizer step timed and its tokens counted; steps 1-2 are left out of the totals. Used for TRL
    (`worker_trl`) and for Unsloth's patched trainer (bench_mfu_gpu.peer_unsloth); `trainer_kw` go to the trainer."""
    import torch, datasets
    from transformers import TrainerCallback
    from trl import SFTTrainer, SFTConfig
    q, o, t = cfg['quantization'], cfg['optim'], cfg['train']
    times, toks, all_toks, losses = [], [], [], []
    class Clock(TrainerCallback):   # a step = end of the previous optimizer step to the end of this one (data loading included)
        def on_train_begin(self, *a, **k): self.t = time.perf_counter()
        def on_step_end(self, *a, **k): t_ = time.perf_counter(); times.append(t_ - self.t); self.t = t_
        def on_log(self, args, state, control, logs=None, **k):
            if logs and 'loss' in logs: losses.append(round(float(logs['loss']), 4))
    class Counting(SFTTrainer):
        def _get_train_sampler(self, *a, **k):
            return torch.utils.data.SequentialSampler(self.train_dataset) if not packing else super()._get_train_sampler(*a, **k)
        def compute_loss(self, model, inputs, *a, **k):
            toks.append(int((inputs['labels'] != -100).sum())); all_toks.append(int(inputs['input_ids'].numel()))
            return super().compute_loss(model, inputs, *a, **k)
    args = SFTConfig(output_dir=output_dir, max_length=cfg['data']['max_length'], packing=packing, completion_only_loss=True,
                     per_device_train_batch_size=t['batch_size'], gradient_accumulation_steps=t['accumulative_counts'],
                     learning_rate=o['lr'], lr_scheduler_type=o['scheduler'], warmup_steps=int(o['warmup_ratio'] * steps),
                     weight_decay=o['weight_decay'], max_grad_norm=o['max_norm'], optim='adamw_torch', max_steps=steps,
                     gradient_checkpointing=t['gradient_checkpointing'],   # TRL's default is True: set both sides alike
                     bf16=t['mixed_precision'] == 'bf16',                  # TRL's default is True (autocast): alike too
                     logging_steps=1, save_strategy='no', report_to=[], use_cpu=not torch.cuda.is_available(), seed=t['seed'],
                     disable_tqdm=True, use_liger_kernel=os.environ.get('BENCH_LIGER') == '1')   # Liger's Triton kernels (bench_mfu_gpu.py's trl-liger)
    Counting(model=model, args=args, train_dataset=datasets.Dataset.from_list(data), processing_class=tok, callbacks=[Clock()],
             **trainer_kw).train()
    per_step = len(toks) // max(len(times), 1)
    return {'tokens': sum(toks[2 * per_step:]), 'all_tokens': sum(all_toks[2 * per_step:]), 'seconds': sum(times[2:]),
            'steps': len(times) - 2, 'loss_first': losses[0] if losses else None, 'loss_last': losses[-1] if losses else None}


def worker_trl(packing, steps, threads, model, seq=None, batch=None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from peft import LoraConfig
    from learnft import config, trainer
    torch.set_num_threads(threads)
    cfg = _cfg(False, steps, threads, model, seq, batch)   # unpacked rows: TRL packs by itself when asked
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as d:
        path = trainer.resolve_model_path(cfg['model'], d)
        tok = AutoTokenizer.from_pretrained(path)
        rows = trainer.build_dataset(cfg, tok, verbose=False)
        if not packing:   # the very samples learnft's loop draws, in its order (TRL then reads them sequentially: run_sft)
            t = cfg['train']
            rows = [rows[i] for s in range(steps) for micro in trainer.batch_indices(len(rows), s, t['batch_size'], t['accumulative_counts'], t['seed']) for i in micro]
        q, lo = cfg['quantization'], cfg['lora']
        m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=q['quant_type'], bnb_4bit_use_double_quant=q['double_quant'],
            bnb_4bit_compute_dtype=getattr(torch, q['compute_dtype'])), **({'device_map': {'': 0}} if cuda else {}))
        return run_sft(m, tok, sft_rows(rows, tok), cfg, steps, packing, d,
                       peft_config=LoraConfig(r=lo['r'], lora_alpha=lo['lora_alpha'], lora_dropout=lo['lora_dropout'],
                                              target_modules=lo['target_modules'], task_type='CAUSAL_LM'))


def run_side(side, packing, steps, threads, model, seq=None, batch=None):
    "Run one side in a fresh interpreter; its result plus its peak RSS."
    from learnft.models import offline
    env = offline({**os.environ, 'OMP_NUM_THREADS': str(threads), 'PYTHONWARNINGS': 'ignore'})
    r = subprocess.run([sys.executable, __file__, '--worker', side, '--packing', str(int(packing)), '--steps', str(steps),
                        '--threads', str(threads), '--model', model] + (['--seq', str(seq)] if seq else []) + (['--batch', str(batch)] if batch else []),
                       capture_output=True, text=True, env=env)
    from learnft.zero import read_result
    res = read_result(r.stdout)
    if r.returncode or res is None: raise RuntimeError(f'{side} (packing={packing}) failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}')
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--steps', type=int, default=20); ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--model', default='smollm2', help="'smollm2' (the bundled model), 'tiny', or a model folder")
    ap.add_argument('--shape', help='GPU: build a config-built Llama of this shape (see bench_train_gpu.py) and use it')
    ap.add_argument('--seq', type=int); ap.add_argument('--batch', type=int)
    ap.add_argument('--checkpointing', action='store_true', help='gradient checkpointing on both sides (default: off on both)')
    ap.add_argument('--precision', choices=['fp32', 'bf16'], help='bf16: autocast on both sides (TRL\'s default); '
                    'fp32: off on both. Default: bf16 on a GPU, fp32 on a CPU')
    ap.add_argument('--packing-modes', default='on,off')
    ap.add_argument('--varlen', action='store_true', help="packed: also learnft with data.use_varlen_attn (flash varlen, no mask)")
    ap.add_argument('--worker', choices=['ours', 'ours-varlen', 'trl']); ap.add_argument('--packing', type=int, default=1)
    a = ap.parse_args()
    if a.worker:
        args = (bool(a.packing), a.steps, a.threads, a.model, a.seq, a.batch)
        res = worker_trl(*args) if a.worker == 'trl' else worker_ours(*args, varlen=a.worker == 'ours-varlen')
        import torch
        res['peak_rss_mib'] = (torch.cuda.max_memory_allocated() if torch.cuda.is_available()
                               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
        from learnft.zero import print_result
        print_result(res); return
    import torch, trl, transformers, peft, bitsandbytes
    if a.shape:
        sys.path.insert(0, str(Path(__file__).parent)); from bench_train_gpu import build_model
        tok = os.environ.get('LEARNFT_TOKENIZER')
        if tok is None:
            from learnft.models import smollm2_path; tok = str(smollm2_path())
        a.model = str(build_model(a.shape, Path(tempfile.mkdtemp(prefix='bench-lab-'))/f'model-{a.shape}', tok))
    shown = f'<tmp>/{Path(a.model).name}' if a.model.startswith(tempfile.gettempdir()) else Path(a.model).name   # no machine paths
    print(f'# {shown}, {a.steps} steps (first 2 untimed), {a.threads} threads; torch {torch.__version__}, transformers '
          f'{transformers.__version__}, peft {peft.__version__}, bitsandbytes {bitsandbytes.__version__}, trl {trl.__version__}')
    mem = 'peak GPU MiB' if torch.cuda.is_available() else 'peak RSS MiB'
    print(f"{'packing':<9}{'side':<22}{'trained tok/s':>14}{'s/step':>9}{mem:>14}{'tok/s ratio':>13}{'mem ratio':>11}")
    if a.checkpointing: os.environ['BENCH_CHECKPOINTING'] = '1'
    os.environ['BENCH_PRECISION'] = a.precision or ('bf16' if torch.cuda.is_available() else 'fp32')
    print(f"# gradient checkpointing {'on' if a.checkpointing else 'off'} on both sides; precision "
          f"{os.environ['BENCH_PRECISION']} on both sides ({'torch.autocast bf16' if os.environ['BENCH_PRECISION'] == 'bf16' else 'no autocast'})")
    for packing in [m == 'on' for m in a.packing_modes.split(',')]:
        sides = [('ours', 'learnft train')] + ([('ours-varlen', 'learnft train, varlen')] if packing and a.varlen else []) + [('trl', 'TRL SFTTrainer')]
        res = {side: run_side(side, packing, a.steps, a.threads, a.model, a.seq, a.batch) for side, _ in sides}
        tps = {s: r['tokens'] / r['seconds'] for s, r in res.items()}
        for side, name in sides:
            r = res[side]
            ratio = f"{tps[side] / tps['trl']:>13.2f}{r['peak_rss_mib'] / res['trl']['peak_rss_mib']:>11.2f}" if side != 'trl' else ''
            print(f"{'on' if packing else 'off':<9}{name:<22}{tps[side]:>14.1f}{r['seconds'] / r['steps']:>9.2f}{r['peak_rss_mib']:>14.0f}{ratio}")
    print('ratios: learnft / TRL (tok/s: higher is better for learnft; memory: lower is better). Memory: peak RSS of the process on a CPU, torch.cuda.max_memory_allocated on a GPU')


if __name__ == '__main__':
    main()
