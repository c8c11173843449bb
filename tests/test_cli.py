"""The `learnft` command line and the lab's training machinery, on the tiny config-built model (seconds each)."""
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest, torch

os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')     # offline: tests/conftest.py
from learnft import chat, checkpoint, config, formats, qlora, trainer
from learnft.cli import main

TINY = 'tiny_qlora_self_cognition'

def run_cli(*args):
    "Run `learnft ARGS` in a fresh interpreter (as the console script would)."
    return subprocess.run([sys.executable, '-c', 'from learnft.cli import main; main()', *args],
                          capture_output=True, text=True, timeout=300)

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "One uninterrupted tiny run (6 steps, checkpoints at 3 and 6)."
    wd = tmp_path_factory.mktemp('full')
    trainer.train(TINY, wd, verbose=False)
    return wd

def test_cfg_options_and_renamed_keys(tmp_path, capsys):
    "XTuner's --cfg-options: every override through one function, errors naming the option; old key names read with a warning."
    c = config.load_config(TINY, ['train.max_steps=2', 'lora.target_modules=[q_proj, v_proj]', 'optim.lr=1e-3', 'deepspeed=null'])
    assert (c['train']['max_steps'], c['lora']['target_modules'], c['optim']['lr'], c['deepspeed']) == (2, ['q_proj', 'v_proj'], 1e-3, None)
    for bad, words in [('train.max_step=2', "unknown key 'train.max_step'"), ('train', 'expected section.key=value'),
                       ('lora.r=eight', "'lora.r': got 'eight'"), ('nope.x=1', "unknown key 'nope'")]:
        with pytest.raises(config.ConfigError, match=words.replace('.', r'\.')): config.load_config(TINY, [bad])
    with pytest.warns(FutureWarning, match="'lora.alpha' is now 'lora.lora_alpha'"):
        assert config.validate_config({**config.CONFIGS[TINY], 'lora': {'r': 4, 'alpha': 8}})['lora']['lora_alpha'] == 8
    with pytest.raises(config.ConfigError, match='same setting'): config.validate_config({**config.CONFIGS[TINY], 'lora': {'alpha': 8, 'lora_alpha': 8}})
    with pytest.warns(FutureWarning): assert config.load_config(TINY, ['lora.dropout=0'])['lora']['lora_dropout'] == 0
    with pytest.raises(SystemExit) as e: main(['log-dataset', TINY, '-n', '1', '--show', 'input_ids', '--cfg-options', 'data.max_lenght=32'])
    assert e.value.code == 2 and "unknown key 'data.max_lenght'" in capsys.readouterr().err
    main(['log-dataset', TINY, '-n', '1', '--show', 'input_ids', '--cfg-options', 'data.max_length=16', 'data.pack_to_max_length=true'])
    out = capsys.readouterr().out
    assert '(16 tokens)' in out, out[:300]

def test_help_and_list(capsys):
    with pytest.raises(SystemExit) as e: main(['--help'])
    out = capsys.readouterr().out
    assert e.value.code == 0 and all(c in out for c in ('list-cfg', 'copy-cfg', 'log-dataset', 'train', 'merge', 'chat'))
    for cmd in ('list-cfg', 'copy-cfg', 'log-dataset', 'train', 'merge', 'chat'):
        with pytest.raises(SystemExit) as e: main([cmd, '--help'])
        assert e.value.code == 0
    assert 'usage: learnft chat' in capsys.readouterr().out
    main(['list-cfg', '-p', 'self_cognition'])
    assert capsys.readouterr().out.split() == ['smollm2_135m_qlora_self_cognition', 'tiny_qlora_self_cognition']

def test_copy_cfg_roundtrip_and_validation(tmp_path, capsys):
    main(['copy-cfg', TINY, str(tmp_path)])
    p = tmp_path/f'{TINY}.yaml'
    assert config.load_config(p) == config.load_config(TINY)
    p.write_text(p.read_text().replace('quant_type: nf4', 'quant_type: nf3'))
    with pytest.raises(SystemExit): main(['train', str(p), '--work-dir', str(tmp_path/'w')])
    err = capsys.readouterr().err
    assert "'quantization.quant_type'" in err and "['nf4', 'fp4']" in err
    with pytest.raises(SystemExit): main(['copy-cfg', 'no_such_cfg', str(tmp_path)])
    assert 'tiny_qlora_self_cognition' in capsys.readouterr().err

def test_log_dataset(capsys):
    main(['log-dataset', TINY, '--show', 'masked_text', '-n', '1'])
    out = capsys.readouterr().out
    assert '⟦' in out and '<|im_start|>user' in out
    main(['log-dataset', TINY, '--show', 'labels', '-n', '1'])
    assert '-100' in capsys.readouterr().out

def test_bad_data_path(tmp_path):
    cfg = dict(config.CONFIGS[TINY], data=dict(path=str(tmp_path/'missing.jsonl'), format='alpaca'))
    with pytest.raises(formats.DataError, match='data.path'): trainer.train(cfg, tmp_path/'w', verbose=False)
    (tmp_path/'bad.jsonl').write_text('{"instruction": "hi", "input": "", "output": ""}\n')   # every row dropped
    cfg['data']['path'] = str(tmp_path/'bad.jsonl')
    with pytest.raises(formats.DataError, match='no usable rows'): trainer.train(cfg, tmp_path/'w2', verbose=False)

def test_train_outputs(trained):
    log = trainer.read_log(trained)
    assert [r['step'] for r in log] == list(range(1, 7)) and all(r['loss'] > 0 for r in log)
    assert (trained/'loss_curve.png').stat().st_size > 1000 and (trained/'adapter'/'adapter_model.safetensors').exists()
    assert [p.name for p in checkpoint.checkpoints(trained)] == ['checkpoint-3', 'checkpoint-6']
    with pytest.raises(FileExistsError): trainer.train(TINY, trained, verbose=False)     # never silently overwrite a run

def test_resume_same_trajectory(trained, tmp_path):
    trainer.train(TINY, tmp_path, verbose=False, stop_at=4)                 # "crash" after step 4 (last checkpoint: 3)
    (tmp_path/'.tmp-checkpoint-6').mkdir()                              # a half-written save is never taken for a good one
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == ['checkpoint-3']
    trainer.train(TINY, tmp_path, resume=True, verbose=False)
    a, b = trainer.read_log(trained), trainer.read_log(tmp_path)
    assert [r['step'] for r in b] == list(range(1, 7))
    assert max(abs(x['loss'] - y['loss']) for x, y in zip(a, b)) < 1e-5, (a, b)
    from safetensors.torch import load_file
    wa, wb = load_file(str(trained/'adapter'/'adapter_model.safetensors')), load_file(str(tmp_path/'adapter'/'adapter_model.safetensors'))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)

def test_merge_and_chat(trained, tmp_path, capsys, monkeypatch):
    out = tmp_path/'merged'
    main(['merge', str(trained/'base'), str(trained/'adapter'), str(out)])
    from transformers import AutoModelForCausalLM
    merged = AutoModelForCausalLM.from_pretrained(out).eval()           # plain transformers, no peft
    assert not any('lora' in n for n, _ in merged.named_parameters())
    peft_model, tok = chat.load_for_chat(trained/'base', trained/'adapter')
    x = tok('Who are you?', return_tensors='pt')['input_ids']
    with torch.no_grad(): assert torch.allclose(merged(x).logits, peft_model(x).logits, atol=1e-4)
    r = run_cli('chat', str(out), '--prompt', 'Who are you?', '--max-new-tokens', '5')
    assert r.returncode == 0 and 'assistant >>>' in r.stdout and 'tokens/s' in r.stderr, r.stderr[-2000:]
    import io
    capsys.readouterr()
    monkeypatch.setattr(sys, 'stdin', io.StringIO('Hi\nWho are you?\n'))          # piped input: one answer per line
    main(['chat', str(trained/'base'), '--adapter', str(trained/'adapter'), '--bits', '4', '--max-new-tokens', '3'])
    cap = capsys.readouterr()
    assert cap.out.count('assistant >>>') == 2 and cap.err.count('tokens/s') == 2, cap

def test_adapter_for_another_base(trained, tmp_path):
    cfg = dict(config.CONFIGS[TINY], model=dict(path='tiny', tiny=dict(num_hidden_layers=2, hidden_size=32, intermediate_size=64)))
    other = trainer.resolve_model_path(config.validate_config(cfg)['model'], tmp_path)
    with pytest.raises(ValueError, match='another base'): chat.merge_adapter(other, trained/'adapter', tmp_path/'m')

def test_eval_then_train_still_learns(tmp_path):
    "Guard for the bitsandbytes CPU repack trap: generate (no grad, eval) and then train: LoRA weights must still change."
    cfg = config.load_config(TINY)
    model, tok = trainer.load_model(trainer.resolve_model_path(cfg['model'], tmp_path), bits=4)
    assert qlora.disable_cpu_repack(model) > 0
    model = trainer.add_lora(model, cfg['lora'])
    chat.generate(model.eval(), tok, 'smollm2', 'Who are you?', max_new_tokens=3)
    with torch.no_grad(): model(torch.tensor([[1, 2, 3]]))
    rows = trainer.build_dataset(cfg, tok, verbose=False)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        loss = model(**trainer.collate(rows[:2], tok.eos_token_id)).loss; loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if 'lora_B' in n and p.requires_grad)
        opt.step(); opt.zero_grad()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters() if 'lora_A' in n and p.requires_grad)

# --- ZeRO-2 through DeepSpeed: 2 ranks on the CPU (gloo) against one process with the same global batch ---
DS_CFG = dict(model=dict(path='tiny', tiny=dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128)), template='smollm2',
              data=dict(builder='self_cognition', builder_args=dict(repeats=1), max_length=64, pack_to_max_length=True),
              quantization=dict(bits=4), lora=dict(r=8, lora_alpha=16, lora_dropout=0.0), optim=dict(lr=5e-2, warmup_ratio=0.25),
              train=dict(batch_size=1, accumulative_counts=2, max_steps=4, save_steps=2, seed=0, num_threads=1))

def _adapter(wd):
    from safetensors.torch import load_file
    return load_file(str(Path(wd)/'adapter'/'adapter_model.safetensors'))

def _losses(wd): return [r['loss'] for r in trainer.read_log(wd)]

@pytest.fixture(scope='module')
def zero2_runs(tmp_path_factory):
    "The same 4 steps: one process (micro-batch 1, accumulation 2) and `NPROC_PER_NODE=2 learnft train --deepspeed zero2` (micro-batch 1 per rank)."
    import yaml
    d = tmp_path_factory.mktemp('zero2')
    one = {**DS_CFG}; two = {**DS_CFG, 'train': {**DS_CFG['train'], 'accumulative_counts': 1}}
    (d/'one.yaml').write_text(yaml.safe_dump(one)); (d/'two.yaml').write_text(yaml.safe_dump(two))
    trainer.train(d/'one.yaml', d/'one', verbose=False)
    env = {**os.environ, 'NPROC_PER_NODE': '2', 'OMP_NUM_THREADS': '1', 'DS_ACCELERATOR': 'cpu'}
    r = subprocess.run([sys.executable, '-m', 'learnft.cli', 'train', str(d/'two.yaml'), '--work-dir', str(d/'two'), '--deepspeed', 'zero2'],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return d, env, r

def test_zero2_two_ranks_equal_one_process(zero2_runs):
    d, _, r = zero2_runs
    assert 'torch.distributed.run' in r.stderr and 'DeepSpeed ZeRO-2: 2 rank(s) on cpu, global batch 2' in r.stdout
    one, two = trainer.read_log(d/'one'), trainer.read_log(d/'two')
    assert [x['step'] for x in two] == [1, 2, 3, 4] and [x['tokens'] for x in one] == [x['tokens'] for x in two]
    assert [x['lr'] for x in one] == pytest.approx([x['lr'] for x in two])
    assert _losses(d/'one') == pytest.approx(_losses(d/'two'), rel=1e-5)
    assert max(_losses(d/'one')) - min(_losses(d/'one')) > 1e-3           # the steps did move the model (lr 5e-2)
    a, b = _adapter(d/'one'), _adapter(d/'two')
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert all((b[k] != 0).any() for k in b if 'lora_B' in k)                # B left zero would make the check vacuous
    cp = d/'two'/'checkpoint-4'
    assert {p.name for p in cp.iterdir()} >= {'adapter', 'deepspeed', 'state.json', 'rng_rank0.pt', 'rng_rank1.pt'}
    assert len(list((cp/'deepspeed'/'zero2').glob('zero_pp_rank_*_optim_states.pt'))) == 2   # each rank's optimizer slice

def test_zero2_resume_same_trajectory(zero2_runs, tmp_path):
    "Kill a 2-rank run after its step-2 checkpoint, resume: the same losses and adapter (LoRA dropout on: each rank's RNG is restored)."
    import yaml
    d, env, _ = zero2_runs
    cfg = {**DS_CFG, 'lora': {**DS_CFG['lora'], 'lora_dropout': 0.1}, 'train': {**DS_CFG['train'], 'accumulative_counts': 1}}
    (tmp_path/'drop.yaml').write_text(yaml.safe_dump(cfg))
    run = lambda wd, *extra: subprocess.run([sys.executable, '-m', 'learnft.cli', 'train', str(tmp_path/'drop.yaml'), '--work-dir', str(wd),
                                             '--deepspeed', 'zero2', *extra], capture_output=True, text=True, timeout=600, env=env)
    r = run(tmp_path/'full'); assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    wd = tmp_path/'cut'; shutil.copytree(tmp_path/'full', wd)
    shutil.rmtree(wd/'checkpoint-4'); shutil.rmtree(wd/'adapter')          # as if killed after the step-2 checkpoint
    r = run(wd, '--resume'); assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert 'resumed from checkpoint-2 (step 2)' in r.stdout
    assert _losses(wd) == pytest.approx(_losses(tmp_path/'full'), rel=1e-6)
    a, b = _adapter(wd), _adapter(tmp_path/'full')
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # a ZeRO-2 checkpoint cannot be resumed by a plain one-process run (its optimizer state is in slices): said, not guessed
    with pytest.raises(ValueError, match='2 rank'): trainer.train(tmp_path/'drop.yaml', wd, resume=True, verbose=False)

def test_zero2_one_process_equals_plain_loop(zero2_runs, tmp_path):
    "Without a launcher `--deepspeed zero2` is a world of one: DeepSpeed's accumulation, clipping and schedule give our loop's numbers."
    d, env, _ = zero2_runs
    r = subprocess.run([sys.executable, '-m', 'learnft.cli', 'train', str(d/'one.yaml'), '--work-dir', str(tmp_path/'ds1'), '--deepspeed', 'zero2'],
                       capture_output=True, text=True, timeout=600, env={**env, 'NPROC_PER_NODE': '1'})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert 'DeepSpeed ZeRO-2: 1 rank(s)' in r.stdout
    assert _losses(tmp_path/'ds1') == pytest.approx(_losses(d/'one'), rel=1e-5)

def test_deepspeed_bad_values(tmp_path):
    with pytest.raises(ValueError, match="allowed: 'zero2'"): trainer.train(TINY, tmp_path, deepspeed='zero3', verbose=False)
    env = {**os.environ, 'NPROC_PER_NODE': 'two'}
    r = subprocess.run([sys.executable, '-m', 'learnft.cli', 'train', TINY, '--work-dir', str(tmp_path/'x'), '--deepspeed', 'zero2'],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and "NPROC_PER_NODE: got 'two'" in r.stderr

TRAINER_CFG = {**DS_CFG, 'train': {**DS_CFG['train'], 'batch_size': 2, 'accumulative_counts': 1, 'max_steps': 5}}

def trainer_run(work_dir, threads: int):
    """transformers' Trainer on what our loop trained in `work_dir/ours` (TRAINER_CFG): the same base weights quantized the same way,
    the same LoRA initialisation, rows, order, AdamW, warm-up + cosine and clipping, at `threads` threads. `(losses, adapter)`."""
    from transformers import Trainer, TrainingArguments
    from peft import get_peft_model_state_dict
    c = config.validate_config(TRAINER_CFG)
    model, tok = trainer.load_model(Path(work_dir)/'ours'/'base', bits=4)
    rows = trainer.build_dataset(c, tok, verbose=False)
    torch.manual_seed(c['train']['seed']); model = trainer.add_lora(model, c['lora'])
    steps, bs = c['train']['max_steps'], c['train']['batch_size']
    batches = [trainer.collate([rows[i] for i in trainer.batch_indices(len(rows), s, bs, 1, c['train']['seed'])[0]], tok.eos_token_id)
               for s in range(steps)]
    seen = []
    class FixedOrder(Trainer):
        def get_train_dataloader(self): return torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch); seen.append(loss.item()); return loss
    o = c['optim']
    args = TrainingArguments(output_dir=str(Path(work_dir)/'hf'), per_device_train_batch_size=bs, gradient_accumulation_steps=1, max_steps=steps,
                             learning_rate=o['lr'], lr_scheduler_type=o['scheduler'], warmup_steps=int(o['warmup_ratio'] * steps),
                             weight_decay=o['weight_decay'], adam_beta1=o['betas'][0], adam_beta2=o['betas'][1], max_grad_norm=o['max_norm'],
                             optim='adamw_torch', logging_steps=1, save_strategy='no', report_to=[], use_cpu=True, seed=0,
                             remove_unused_columns=False, disable_tqdm=True)
    before = torch.get_num_threads(); torch.set_num_threads(threads)
    try: FixedOrder(model=model, args=args, train_dataset=rows).train()
    finally: torch.set_num_threads(before)
    return seen, get_peft_model_state_dict(model)

def test_loop_equals_transformers_trainer(tmp_path):
    "Our loop against transformers' Trainer on the same QLoRA model, rows, order, AdamW, warm-up + cosine and clipping: same losses, same adapter."
    trainer.train(TRAINER_CFG, tmp_path/'ours', verbose=False)
    # Like for like includes the thread count: our loop ran with train.num_threads, and a CPU matmul's reduction order depends on
    # the number of threads. Measured by `python tools/loop_vs_trainer_spread.py 1,2,16` (max |adapter difference|): equal
    # thread counts give 0.0 on an AVX2 CPU (1 and 2 threads) and on an AVX512-BF16/AMX Xeon (1 thread); Trainer at 2 / 16 threads
    # against our 1 gave 1.3e-5 / 5.7e-5 on the Xeon (its AVX512 GEMMs split the reduction by thread), 0.0 on the AVX2 CPU.
    seen, theirs = trainer_run(tmp_path, TRAINER_CFG['train']['num_threads'])
    assert len(seen) == TRAINER_CFG['train']['max_steps']
    assert seen == pytest.approx(_losses(tmp_path/'ours'), rel=1e-6)          # the log rounds losses to 6 decimals (4e-8 measured)
    assert max(seen) - min(seen) > 1e-2                                       # the model moved: equal trajectories mean something
    ours = _adapter(tmp_path/'ours')
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)   # bit for bit (see above)

# --- data.use_varlen_attn and train.mixed_precision ---
SHORT = {**DS_CFG, 'train': {**DS_CFG['train'], 'max_steps': 3, 'save_steps': 100}}

def test_varlen_attention_trains_like_the_mask(tmp_path, monkeypatch):
    "data.use_varlen_attn: packed rows go in as one flattened row with cu_seqlens and no mask (sdpa per segment on a CPU): same losses, same adapter as lesson 04's block-diagonal mask."
    from learnft import packing
    seen, orig = [], packing.varlen_attention
    def spy(*a, **k): seen.append(k.get('cu_seq_lens_q') is not None and a[1].shape[0] == 1); return orig(*a, **k)
    monkeypatch.setattr(packing, 'varlen_attention', spy)
    trainer.train(SHORT, tmp_path/'mask', verbose=False)
    assert not seen                                   # the mask run never calls it
    trainer.train({**SHORT, 'data': {**SHORT['data'], 'use_varlen_attn': True}}, tmp_path/'varlen', verbose=False)
    assert seen and all(seen)                         # every attention call of the varlen run went through the boundaries
    lm, lv = _losses(tmp_path/'mask'), _losses(tmp_path/'varlen')
    assert len(lm) == 3 and lv == pytest.approx(lm, rel=1e-5), (lm, lv)
    a, b = _adapter(tmp_path/'mask'), _adapter(tmp_path/'varlen')
    # Summation order differs (per segment vs masked), and Adam, whose step is about lr = 5e-2 per weight whatever the gradient's
    # size, turns ~1e-7 gradient differences into weight ones: measured on an AVX512-BF16 CPU, at most 1.8e-4 (0.4 % of one
    # step, in 0.01 % of the entries) and 2.5e-5 of the adapter's norm. Bounds: 1 % of a step, and 2e-4 of the norm.
    assert a.keys() == b.keys()
    A, B = (torch.cat([w[k].flatten() for k in sorted(a)]) for w in (a, b))
    lr = SHORT['optim']['lr']
    assert (A - B).abs().max() < 1e-2 * lr and (A - B).norm() < 2e-4 * A.norm(), ((A - B).abs().max(), (A - B).norm() / A.norm())

def test_varlen_needs_packing():
    with pytest.raises(config.ConfigError, match="data.use_varlen_attn.*pack_to_max_length"):
        config.validate_config({**SHORT, 'data': {**SHORT['data'], 'use_varlen_attn': True, 'pack_to_max_length': False}})

def test_bf16_mixed_precision(tmp_path):
    "train.mixed_precision: bf16 runs the forward under torch.autocast: losses near the fp32 run's but not equal; the adapter stays fp32."
    trainer.train(SHORT, tmp_path/'fp32', verbose=False)
    trainer.train({**SHORT, 'train': {**SHORT['train'], 'mixed_precision': 'bf16'}}, tmp_path/'bf16', verbose=False)
    lf, lb = _losses(tmp_path/'fp32'), _losses(tmp_path/'bf16')
    assert lf != lb and lb == pytest.approx(lf, rel=3e-2), (lf, lb)
    assert all(t.dtype == torch.float32 for t in _adapter(tmp_path/'bf16').values())
    with pytest.raises(config.ConfigError, match="train.mixed_precision.*'bf16'"):
        config.validate_config({**SHORT, 'train': {**SHORT['train'], 'mixed_precision': 'fp16'}})

def test_mask_in_activation_dtype(tmp_path, monkeypatch):
    "The packed rows' mask is built in the activations' dtype: a float32 mask next to bf16 queries gives NaN losses in CUDA's memory-efficient kernel (CPU kernels hide it, so this checks the dtype itself)."
    seen, orig = [], trainer.collate
    def spy(*a, **k): b = orig(*a, **k); seen.append(b['attention_mask'].dtype); return b
    monkeypatch.setattr(trainer, 'collate', spy)
    trainer.train({**SHORT, 'quantization': {'bits': 16}, 'train': {**SHORT['train'], 'max_steps': 1}}, tmp_path/'bf16', verbose=False)
    trainer.train({**SHORT, 'train': {**SHORT['train'], 'max_steps': 1}}, tmp_path/'fp32', verbose=False)
    assert seen[0] == torch.bfloat16 and seen[-1] == torch.float32, seen
    m = trainer.collate(trainer.build_dataset(config.validate_config(SHORT), trainer.load_model(trainer.resolve_model_path(SHORT['model'], tmp_path))[1], verbose=False)[:2],
                    0, mask_dtype=torch.bfloat16)['attention_mask']
    assert torch.isfinite(m).all() and m.min() == torch.finfo(torch.bfloat16).min

def test_num_threads_restored(tmp_path):
    "train.num_threads holds for the run only: torch's thread count comes back afterwards (and after a simulated interruption)."
    torch.set_num_threads(2)
    trainer.train({**SHORT, 'train': {**SHORT['train'], 'max_steps': 1, 'num_threads': 1}}, tmp_path/'a', verbose=False)
    assert torch.get_num_threads() == 2
    trainer.train({**SHORT, 'train': {**SHORT['train'], 'max_steps': 3, 'num_threads': 1}}, tmp_path/'b', verbose=False, stop_at=1)
    assert torch.get_num_threads() == 2

def test_merged_model_serves_the_trained_template(trained, tmp_path):
    "`learnft merge` ships the trained chat template (no base system prompt) and its stop tokens: plain transformers = learnft chat."
    from transformers import AutoModelForCausalLM, AutoTokenizer
    out = tmp_path/'merged'
    r = run_cli('merge', str(trained/'base'), str(trained/'adapter'), str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == AutoTokenizer.from_pretrained(trained/'adapter').chat_template and 'SmolLM' not in tok.chat_template
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert 2 in model.generation_config.eos_token_id                     # <|im_end|>, the trained end-of-turn
    q = [{'role': 'user', 'content': 'Who are you?'}]
    enc = tok.apply_chat_template(q, add_generation_prompt=True, return_tensors='pt', return_dict=True)
    with torch.no_grad(): plain = model.generate(**enc, max_new_tokens=8, do_sample=False)[0, enc['input_ids'].shape[1]:]
    ours = chat.generate(model, tok, None, q, max_new_tokens=8)
    assert tok.decode(plain, skip_special_tokens=True).strip() == ours['reply']
    r = run_cli('chat', str(out), '--prompt', 'Who are you?', '--max-new-tokens', '8')
    assert r.returncode == 0 and ours['reply'] in r.stdout, (ours['reply'], r.stdout[-500:])
    r = run_cli('chat', str(out), '--prompt', 'Hi', '--max-new-tokens', '2', '--template', 'qwen_chat')   # not the trained layout
    assert r.returncode == 0 and 'mismatch' in r.stderr and "'qwen_chat'" in r.stderr, r.stderr[-1500:]
    for f in out.glob('chat_template*'): f.unlink()                      # a folder without a chat template: the error names the fix
    tc = json.loads((out/'tokenizer_config.json').read_text()); tc.pop('chat_template', None)
    (out/'tokenizer_config.json').write_text(json.dumps(tc))
    r = run_cli('chat', str(out), '--prompt', 'Hi', '--max-new-tokens', '2')
    assert r.returncode != 0 and 'no chat_template' in r.stderr and '--template' in r.stderr, r.stderr[-1500:]

def test_checkpoints_carry_the_trained_template(trained):
    for cp in checkpoint.checkpoints(trained):
        assert (cp/'adapter'/'tokenizer_config.json').exists()

def test_eval_every_checkpoint_of_a_run(trained, capsys):
    "`learnft eval RUN`: each checkpoint scored on the validation set, a plot of identity and retention against steps."
    main(['eval', str(trained)])
    out = capsys.readouterr().out
    lines = [l for l in out.splitlines() if l.startswith('checkpoint-')]
    assert [l.split()[0] for l in lines] == ['checkpoint-3', 'checkpoint-6'] and all('identity ' in l and 'retention ' in l for l in lines), out
    assert (trained/'eval_val.png').exists()
    with pytest.raises(SystemExit) as e: main(['eval', str(trained/'nothing-here')])
    assert e.value.code == 2 and 'not a run directory' in capsys.readouterr().err


def test_help_lists_every_verb():
    r = run_cli('--help')
    assert r.returncode == 0
    for verb in ('list-cfg', 'copy-cfg', 'log-dataset', 'train', 'merge', 'eval', 'chat', 'web', 'export-gguf'): assert verb in r.stdout, verb
    r = run_cli('chat', '--help')
    for flag in ('--temperature', '--top-p', '--top-k', '--repetition-penalty', '--seed', '--with-plugins'): assert flag in r.stdout, flag


def test_chat_refuses_bad_sampling_and_plugins_before_loading():
    r = run_cli('chat', 'no-such-model', '--top-p', '1.5', '--prompt', 'hi')
    assert r.returncode == 2 and 'learnft chat: error: top_p: got 1.5; allowed: in (0, 1]' in r.stderr and 'Traceback' not in r.stderr
    r = run_cli('chat', 'no-such-model', '--with-plugins', 'calculate', 'browse', '--prompt', 'hi')
    assert r.returncode == 2 and "--with-plugins: got ['calculate', 'browse']; allowed: one or more of calculate, solve, search" in r.stderr
