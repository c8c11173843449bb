"""GPU: model FLOPs utilisation of `learnft train` with XTuner's QLoRA recipe, each variant in its own process, with a profile.

XTuner's recipe (QLoRA nf4 + double quantization, LoRA r 64 / alpha 16 / dropout 0.1 on every linear layer, bf16
autocast) on a config-built Llama of a 1B or 7B shape (random weights, SmolLM2's vocabulary), rows packed to `--seq`.
Each variant is one `learnft.trainer.train` run in a fresh interpreter; the first 2 steps are warm-up and not counted. A step's
time runs from its start to the next step's (the host's work between steps counts; runs before 2026-12-03's run6 timed only
the optimizer step itself, synchronised).

    python benchmarks/bench_mfu_gpu.py --shape 7b --seq 2048 --variants mask:2,varlen:2,varlen:4 --profile varlen:2
    python benchmarks/bench_mfu_gpu.py --shape 7b --peers trl,trl-liger --peer-batch 2     # TRL SFTTrainer (+ Liger) alike
    python benchmarks/bench_mfu_gpu.py --shape 1b --variants '' --peers unsloth,unsloth:nodrop --peer-batch 16  # Unsloth alike (its wheels: tools/device_wheels.sh --peers)

MFU counts every processed token (padding included) at 4·N FLOPs, N the parameters of the linear layers the tokens go
through (the LM head included, the embedding lookup not): forward 2·N, backward to the activations 2·N; frozen 4-bit
weights get no weight gradient. Gradient checkpointing recomputes the forward (2·N more): that is the hardware FLOPs
utilisation (HFU) column. Attention and LoRA FLOPs are left out of both, as in the issue's table. Peak: the H200's
989 TFLOP/s dense bf16.

A variant is `attention:micro_batch[:flag...]`, attention one of `mask` (sdpa with the block-diagonal mask of lesson 04)
or `varlen` (`data.use_varlen_attn`: one flattened row, flash varlen); flags: `ckpt` (gradient checkpointing), `compile`
(`train.kernels: compile`, torch.compile of each decoder layer), `liger` (`train.kernels: liger`, Liger's kernels), `nodrop`
(LoRA dropout 0, so that the variants' losses can be compared step for step), `fp32` (float32 compute, no autocast: the
yardstick for bf16 noise), `noprefetch` (`train.prefetch: false`: the batches built in the loop, not in a background thread
while the step before runs), `hostprof` (step 7 under cProfile, not timed: the Python functions with the most own time on the
host, and how many calls each makes per step), `itemsites` (where step 7 calls `Tensor.item()` or `Tensor.tolist()`, a wait
for the GPU each on a GPU tensor: the calling file and line, counted). `--profile V` profiles steps 4-5 of variant V
(torch.profiler) and prints the GPU time per step by kind of kernel, the time the GPU sat idle, and that idle time inside the
profiled steps charged to what the host was doing when each gap ended (the stepper's forward, backward, or clip + AdamW + the
read of the loss and norm; `other`: the batch's copy to the GPU and what is outside them).
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
KINDS = [('dequantize (bitsandbytes)', ('dequantize', 'kdequant')),
         ('attention', ('flash', 'fmha', 'attention', 'efficient_attention', 'sdpa')),
         ('matmul (gemm)', ('gemm', 'xmma', 'cutlass', 'nvjet', 'cublas', 'splitk', 'sm90_', 'sm80_')),
         ('optimizer (AdamW)', ('multi_tensor', 'adam')),
         ('loss (log-softmax, NLL)', ('softmax', 'nll', 'cross_entropy')),
         ('reductions (norms, clip)', ('reduce', 'norm')),
         ('copies, casts, elementwise', ('elementwise', 'copy', 'cast', 'vectorized', 'unrolled', 'fill', 'cat', 'index'))]


def linear_params(model_dir: Path) -> int:
    "Weights of every linear layer a token passes, from the model folder's config (learnft.speed.linear_params, lesson 08b)."
    from learnft.speed import linear_params as count
    return count(json.loads((Path(model_dir)/'config.json').read_text()))


def recipe(model_dir, seq, batch, steps, varlen, ckpt, repeats=80):
    return dict(model=dict(path=str(model_dir)), template='smollm2',
                data=dict(builder='self_cognition', builder_args=dict(repeats=repeats, general_repeats=repeats // 2), max_length=seq,
                          pack_to_max_length=True, use_varlen_attn=varlen),
                quantization=dict(bits=4, quant_type='nf4', double_quant=True, compute_dtype='bfloat16'),
                lora=dict(r=64, lora_alpha=16, lora_dropout=0.1, target_modules='all-linear'),
                optim=dict(lr=2e-4), train=dict(batch_size=batch, max_steps=steps, save_steps=10 ** 6, gradient_checkpointing=ckpt,
                                                mixed_precision='bf16'),
                eval=dict(prompts=[]))


def peak_gib() -> float:
    import resource, torch
    return (torch.cuda.max_memory_allocated() if torch.cuda.is_available() else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30


def kind_of(name: str) -> str:
    n = name.lower()
    for kind, keys in KINDS:
        if any(k in n for k in keys): return kind
    return 'other kernels'


def worker(spec: str, model_dir: str, seq: int, steps: int, profile: bool) -> dict:
    import torch
    from learnft import trainer
    att, batch, *flags = spec.split(':')
    cfg = recipe(model_dir, seq, int(batch), steps, att == 'varlen', 'ckpt' in flags)
    if 'nodrop' in flags: cfg['lora']['lora_dropout'] = 0.0      # for comparing losses: no random dropout masks
    if 'fp32' in flags: cfg['quantization']['compute_dtype'] = 'float32'; cfg['train']['mixed_precision'] = None
    if 'noprefetch' in flags: cfg['train']['prefetch'] = False    # each step's batches built in the loop, as before train.prefetch
    kernels = '+'.join(k for k in ('liger', 'compile', 'lora') if k in flags) or None
    cfg['train']['kernels'] = kernels                # learnft's own switch (trainer.apply_kernels)
    seen, prof_out = [], {}
    real_step = trainer.optimizer_step
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)   # (a CPU run: to try the script)
    def step(stepper, micro, make_batch, amp, batches=None):   # counts every processed token; profiles steps 4-5
        prof_out.setdefault('entries', []).append(time.perf_counter())   # a step's time: from its start to the next one's
        def counted(idx):
            b = make_batch(idx); seen.append(int(b['input_ids'].numel())); return b
        if batches is not None: seen.extend(int(b['input_ids'].numel()) for b in batches)   # built ahead (train.prefetch)
        k = len(prof_out.setdefault('walls', []))
        if 'itemsites' in flags and k == 6:         # who calls Tensor.item() (each one waits for the GPU), by file and line
            import collections, traceback
            sites, real = collections.Counter(), {m: getattr(torch.Tensor, m) for m in ('item', 'tolist')}
            def counting(m):
                def read(self):
                    f = traceback.extract_stack(limit=2)[0]; sites[f"{short_func((f.filename, 0, ''))}{f.lineno} {m}"] += 1
                    return real[m](self)
                return read
            for m in real: setattr(torch.Tensor, m, counting(m))
            try: r = real_step(stepper, micro, counted, amp, batches); sync()
            finally:
                for m, f in real.items(): setattr(torch.Tensor, m, f)
            prof_out['walls'].append(0.0); prof_out['end'] = time.perf_counter()
            prof_out['item_sites'] = dict(sites.most_common(12)); return r
        if 'hostprof' in flags and k == 6:          # the host's Python, function by function (this step is not timed)
            import cProfile, pstats
            sync(); t = time.perf_counter(); cp = cProfile.Profile(); cp.enable()
            r = real_step(stepper, micro, counted, amp, batches); sync()
            cp.disable(); prof_out['walls'].append(time.perf_counter() - t); prof_out['end'] = time.perf_counter()
            st = pstats.Stats(cp)
            prof_out['host'] = dict(wall=prof_out['walls'][-1], total=st.total_tt, top=[
                dict(func=short_func(key), calls=v[1], own_s=v[2], cum_s=v[3]) for key, v in sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:25]])
            return r
        if not (profile and k in (3, 4)):
            t = time.perf_counter(); r = real_step(stepper, micro, counted, amp, batches); sync()
            prof_out['walls'].append(time.perf_counter() - t); prof_out['end'] = time.perf_counter(); return r
        from torch.profiler import profile as P, ProfilerActivity as A, record_function
        marked = {}
        for verb, ph in (('forward', 'forward'), ('backward', 'backward'), ('step', 'clip + AdamW + read')):
            def mark(*args, _f=getattr(stepper, verb), _ph=ph):
                with record_function(f'learnft:{_ph}'): return _f(*args)
            marked[verb] = mark; setattr(stepper, verb, mark)
        sync(); t = time.perf_counter()
        with P(activities=[A.CPU, A.CUDA]) as p:
            r = real_step(stepper, micro, counted, amp, batches); sync()
        prof_out['walls'].append(time.perf_counter() - t); prof_out['end'] = time.perf_counter()
        for verb in marked: delattr(stepper, verb)                # the class's own methods again
        with tempfile.TemporaryDirectory() as d:
            p.export_chrome_trace(f'{d}/trace.json'); g = gaps_by_phase(f'{d}/trace.json')
        gp = prof_out.setdefault('gaps', {'idle_s': {k: 0.0 for k in PHASES}, 'gaps_over_50us': {k: 0 for k in PHASES}})
        for k in PHASES: gp['idle_s'][k] += g['idle_s'][k] / 2; gp['gaps_over_50us'][k] += g['gaps_over_50us'][k] / 2
        per = prof_out.setdefault('kinds', {})
        for e in p.key_averages():
            us = getattr(e, 'self_device_time_total', None)
            if us is None: us = getattr(e, 'self_cuda_time_total', 0)
            if us and e.device_type.name == 'CUDA':
                per[kind_of(e.key)] = per.get(kind_of(e.key), 0) + us / 1e6 / 2
                prof_out.setdefault('top', {})[e.key[:90]] = prof_out.get('top', {}).get(e.key[:90], 0) + us / 1e6 / 2
        prof_out['profiled_wall'] = prof_out.get('profiled_wall', 0) + prof_out['walls'][-1] / 2
        return r
    trainer.optimizer_step = step
    with tempfile.TemporaryDirectory() as d:
        trainer.train(cfg, Path(d)/'run', verbose=False)
        recs = trainer.read_log(Path(d)/'run')
    # from each step's start to the next one's (the last: to its end, synchronised): the host's work between steps counts too
    ent = prof_out['entries'] + [prof_out['end']]
    walls = [ent[k + 1] - ent[k] for k in range(len(prof_out['walls']))
             if k >= 2 and not (profile and k in (3, 4)) and not ({'hostprof', 'itemsites'} & set(flags) and k == 6)]
    per_step = len(seen) // max(len(prof_out['walls']), 1)
    return {'spec': spec, 's_step': sum(walls) / len(walls), 'tokens_step': sum(seen[2 * per_step:]) / max(len(prof_out['walls']) - 2, 1),
            'trained_step': sum(r['tokens'] for r in recs[2:]) / max(len(recs) - 2, 1),
            'peak_gib': peak_gib(), 'loss_first': recs[0]['loss'], 'loss_last': recs[-1]['loss'],
            'losses': [r['loss'] for r in recs], **({k: prof_out[k] for k in ('kinds', 'profiled_wall', 'top', 'host', 'item_sites', 'gaps') if k in prof_out})}


PHASES = ('forward', 'backward', 'clip + AdamW + read', 'other')


def gaps_by_phase(trace_path) -> dict:
    """The GPU's idle time in a torch.profiler chrome trace, each gap charged to the phase (`learnft:<phase>` ranges the worker
    puts around the stepper's forward, backward and step) whose launch ended it: the host was still in that phase when the
    GPU ran dry. Busy: kernels, copies and memsets, on any stream. Seconds per phase, and the count of gaps over 50 us."""
    ev = json.loads(Path(trace_path).read_text()).get('traceEvents', [])
    ranges = sorted((e['ts'], e['ts'] + e['dur'], e['name'][8:]) for e in ev
                    if e.get('cat') == 'user_annotation' and str(e.get('name', '')).startswith('learnft:'))
    launch = {e['args']['correlation']: e['ts'] for e in ev
              if e.get('cat') == 'cuda_runtime' and 'correlation' in e.get('args', {})}
    gpu = sorted((e['ts'], e['ts'] + e['dur'], e.get('args', {}).get('correlation')) for e in ev
                 if e.get('cat') in ('kernel', 'gpu_memcpy', 'gpu_memset') and e.get('dur') is not None)
    def phase(t):
        inner = [r for r in ranges if r[0] <= t <= r[1]]
        return min(inner, key=lambda r: r[1] - r[0])[2] if inner else 'other'
    out = {k: 0.0 for k in PHASES}; big = {k: 0 for k in PHASES}; end = None
    for t0, t1, corr in gpu:
        if end is not None and t0 > end:
            ph = phase(launch.get(corr, t0)); ph = ph if ph in out else 'other'
            out[ph] += (t0 - end) / 1e6; big[ph] += (t0 - end) > 50
        end = t1 if end is None else max(end, t1)
    return {'idle_s': out, 'gaps_over_50us': big}


def short_func(key: tuple) -> str:
    "A cProfile key as package/file.py:function, without the machine's paths."
    f, _, name = key
    if f == '~': return name
    parts = Path(f).parts
    for anchor in ('site-packages', 'dist-packages'):
        if anchor in parts: return '/'.join(parts[parts.index(anchor) + 1:]) + ':' + name
    return '/'.join(parts[-2:]) + ':' + name


def peer_result(spec: str, r: dict, **extra) -> dict:
    "A peer's `bench_lab_train.run_sft` totals as a row of this benchmark's table."
    return {'spec': spec, 's_step': r['seconds'] / r['steps'], 'tokens_step': r['all_tokens'] / r['steps'],
            'trained_step': r['tokens'] / r['steps'], 'peak_gib': peak_gib(),
            'loss_first': r.get('loss_first'), 'loss_last': r.get('loss_last'), **extra}


def peer(kind: str, model_dir: str, seq: int, steps: int, batch: int) -> dict:
    "TRL SFTTrainer (`trl-liger`: with `use_liger_kernel`) on the same rows, recipe, batch and precision, via bench_lab_train."
    sys.path.insert(0, str(HERE)); import bench_lab_train as B
    from learnft import config
    B._cfg = lambda packing, steps_, threads, model, seq_=None, batch_=None: config.validate_config(
        recipe(model_dir, seq, batch, steps, False, False))
    os.environ['BENCH_LIGER'] = '1' if kind == 'trl-liger' else '0'
    return peer_result(kind, B.worker_trl(True, steps, 2, model_dir, seq, batch))


UNSLOTH_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']   # 'all-linear' of a Llama


def peer_unsloth(spec: str, model_dir: str, seq: int, steps: int, batch: int) -> dict:
    """Unsloth (`FastLanguageModel`: its nf4 loading, LoRA kernels and patched TRL `SFTTrainer`) on the same rows, recipe,
    batch and precision as the TRL peer; `unsloth:nodrop`: LoRA dropout 0, the only case where Unsloth takes its fast LoRA path."""
    import unsloth                                   # first: it patches transformers, peft and trl as it is imported
    from unsloth import FastLanguageModel
    import torch
    sys.path.insert(0, str(HERE)); import bench_lab_train as B
    from learnft import config, trainer
    cfg = config.validate_config(recipe(model_dir, seq, batch, steps, False, False))
    if 'nodrop' in spec.split(':'): cfg['lora']['lora_dropout'] = 0.0
    lo = cfg['lora']
    with tempfile.TemporaryDirectory() as d:
        path = trainer.resolve_model_path(cfg['model'], d)
        model, tok = FastLanguageModel.from_pretrained(model_name=str(path), max_seq_length=seq, dtype=torch.bfloat16,
                                                       load_in_4bit=True, local_files_only=True)
        model = FastLanguageModel.get_peft_model(model, r=lo['r'], lora_alpha=lo['lora_alpha'], lora_dropout=lo['lora_dropout'],
                                                 target_modules=UNSLOTH_TARGETS, bias='none', use_gradient_checkpointing=False,
                                                 random_state=cfg['train']['seed'])
        data = B.sft_rows(trainer.build_dataset(cfg, tok, verbose=False), tok)   # the rows the TRL peer gets
        r = B.run_sft(model, tok, data, cfg, steps, True, d)
    return peer_result(spec, r, unsloth=getattr(unsloth, '__version__', '?'))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--shape', default='7b'); ap.add_argument('--seq', type=int, default=2048)
    ap.add_argument('--steps', type=int, default=8); ap.add_argument('--variants', default='mask:2,varlen:2')
    ap.add_argument('--profile', default=''); ap.add_argument('--peers', default=''); ap.add_argument('--peer-batch', type=int, default=2)
    ap.add_argument('--work', default=None); ap.add_argument('--json', default=None, help='also write the rows to this file')
    ap.add_argument('--worker'); ap.add_argument('--model-dir')
    a = ap.parse_args()
    if a.worker:
        from learnft.models import offline; offline()
        res = peer(a.worker, a.model_dir, a.seq, a.steps, a.peer_batch) if a.worker.startswith('trl') else \
              peer_unsloth(a.worker, a.model_dir, a.seq, a.steps, a.peer_batch) if a.worker.startswith('unsloth') else \
              worker(a.worker, a.model_dir, a.seq, a.steps, a.worker in a.profile.split(','))
        print('RESULT ' + json.dumps(res)); return
    import torch
    from learnft import speed
    sys.path.insert(0, str(HERE)); from bench_train_gpu import build_model, SHAPES
    SHAPES.setdefault('test', dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=4))   # a CPU try of the script: --shape test
    tok = os.environ.get('LEARNFT_TOKENIZER')
    if tok is None:
        from learnft.models import smollm2_path; tok = str(smollm2_path())
    work = Path(a.work or tempfile.mkdtemp(prefix='bench-mfu-'))
    model_dir = build_model(a.shape, work/f'model-{a.shape}', tok)
    N = linear_params(model_dir)
    print(f'# {a.shape}-shaped Llama (config-built), {N / 1e9:.2f} B linear parameters; XTuner QLoRA recipe (nf4 + DQ, r 64 '
          f'all-linear, bf16 autocast), rows packed to {a.seq}; {a.steps} steps, 2 untimed; {torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"}, torch {torch.__version__}')
    print(f"{'variant':<16}{'tokens/step':>12}{'s/step':>8}{'tokens/s':>10}{'MFU':>7}{'HFU':>7}{'peak GiB':>10}  losses (first -> last)")
    rows = []
    for spec in [v for v in a.variants.split(',') if v] + [p for p in a.peers.split(',') if p]:
        env = {**os.environ, 'PYTHONWARNINGS': 'ignore', 'TQDM_DISABLE': '1'}
        r = subprocess.run([sys.executable, __file__, '--worker', spec, '--model-dir', str(model_dir), '--seq', str(a.seq),
                            '--steps', str(a.steps), '--profile', a.profile, '--peer-batch', str(a.peer_batch)],
                           capture_output=True, text=True, env=env)
        line = [l for l in r.stdout.splitlines() if l.startswith('RESULT ')]
        if r.returncode or not line:
            print(f'{spec:<16} failed: {(r.stdout[-800:] + r.stderr[-1500:])!r}'); continue
        x = json.loads(line[-1][7:]); rows.append(x)
        tps = x['tokens_step'] / x['s_step']; ckpt = 'ckpt' in spec.split(':')
        mfu, hfu = speed.mfu(tps, speed.train_flops_per_token(N)), speed.mfu(tps, speed.train_flops_per_token(N, recompute=ckpt))
        x.update(tokens_per_s=tps, mfu=mfu, hfu=hfu)
        print(f"{spec:<16}{x['tokens_step']:>12.0f}{x['s_step']:>8.3f}{tps:>10.0f}{mfu:>7.1%}{hfu:>7.1%}{x['peak_gib']:>10.2f}  "
              f"{x['loss_first']} -> {x['loss_last']}", flush=True)
        if a.json: Path(a.json).write_text(json.dumps(rows, indent=1))      # after every row: a run cut short keeps what it measured
    for x in rows:
        if 'kinds' not in x: continue
        print(f"\n# profile of {x['spec']}: GPU time per step by kind of kernel (steps 4-5; the profiler's own wall: {x['profiled_wall'] * 1e3:.0f} ms)")
        busy = sum(x['kinds'].values())
        for k, v in sorted(x['kinds'].items(), key=lambda kv: -kv[1]):
            print(f"{k:<30}{v * 1e3:>9.1f} ms{v / x['s_step']:>8.1%}")
        print(f"{'GPU idle (host work, syncs)':<30}{max(x['s_step'] - busy, 0) * 1e3:>9.1f} ms{max(1 - busy / x['s_step'], 0):>8.1%}"
              f"   (against the unprofiled {x['s_step'] * 1e3:.0f} ms step)")
        if 'gaps' in x:
            g = x['gaps']
            print('# the GPU idle inside the profiled steps (from the first launch to the end), by what the host was doing when the '
                  'launch that ended each gap came: ' + '; '.join(f"{k} {g['idle_s'][k] * 1e3:.1f} ms ({g['gaps_over_50us'][k]:.0f} gaps > 50 us)"
                                                                   for k in PHASES))
        print('# the 12 kernels that took longest per step:')
        for k, v in sorted(x.get('top', {}).items(), key=lambda kv: -kv[1])[:12]: print(f"  {v * 1e3:8.1f} ms  {k}")
    for x in rows:
        if 'host' not in x: continue
        h = x['host']
        print(f"\n# host profile of {x['spec']} (step 7 under cProfile: {h['wall'] * 1e3:.0f} ms wall, {h['total'] * 1e3:.0f} ms in Python "
              f"functions): own and cumulative ms per step, calls per step")
        for r in h['top']: print(f"  {r['own_s'] * 1e3:8.1f} {r['cum_s'] * 1e3:8.1f}  x{r['calls']:<6} {r['func']}")
    for x in rows:
        if 'item_sites' in x:
            print(f"\n# Tensor.item() and .tolist() in step 7 of {x['spec']}, by caller: " + '; '.join(f'{k} x{v}' for k, v in x['item_sites'].items()))
    if a.json: Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == '__main__':
    main()
