"""The `learnft` command line and the lab's training machinery, on the tiny config-built model (seconds each)."""
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest, torch

os.environ.update(HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', HF_DATASETS_OFFLINE='1', TOKENIZERS_PARALLELISM='false')
from learnft import lab
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
    lab.train(TINY, wd, verbose=False)
    return wd

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
    assert lab.load_config(p) == lab.load_config(TINY)
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
    cfg = dict(lab.CONFIGS[TINY], data=dict(path=str(tmp_path/'missing.jsonl'), format='alpaca'))
    with pytest.raises(lab.DataError, match='data.path'): lab.train(cfg, tmp_path/'w', verbose=False)
    (tmp_path/'bad.jsonl').write_text('{"instruction": "hi", "input": "", "output": ""}\n')   # every row dropped
    cfg['data']['path'] = str(tmp_path/'bad.jsonl')
    with pytest.raises(lab.DataError, match='no usable rows'): lab.train(cfg, tmp_path/'w2', verbose=False)

def test_train_outputs(trained):
    log = lab.read_log(trained)
    assert [r['step'] for r in log] == list(range(1, 7)) and all(r['loss'] > 0 for r in log)
    assert (trained/'loss_curve.png').stat().st_size > 1000 and (trained/'adapter'/'adapter_model.safetensors').exists()
    assert [p.name for p in lab.checkpoints(trained)] == ['checkpoint-3', 'checkpoint-6']
    with pytest.raises(FileExistsError): lab.train(TINY, trained, verbose=False)     # never silently overwrite a run

def test_resume_same_trajectory(trained, tmp_path):
    lab.train(TINY, tmp_path, verbose=False, stop_at=4)                 # "crash" after step 4 (last checkpoint: 3)
    (tmp_path/'.tmp-checkpoint-6').mkdir()                              # a half-written save is never taken for a good one
    assert [p.name for p in lab.checkpoints(tmp_path)] == ['checkpoint-3']
    lab.train(TINY, tmp_path, resume=True, verbose=False)
    a, b = lab.read_log(trained), lab.read_log(tmp_path)
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
    peft_model, tok = lab.load_for_chat(trained/'base', trained/'adapter')
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
    cfg = dict(lab.CONFIGS[TINY], model=dict(path='tiny', tiny=dict(num_hidden_layers=2, hidden_size=32, intermediate_size=64)))
    other = lab.resolve_model_path(lab.validate_config(cfg)['model'], tmp_path)
    with pytest.raises(ValueError, match='another base'): lab.merge_adapter(other, trained/'adapter', tmp_path/'m')

def test_eval_then_train_still_learns(tmp_path):
    "Guard for the bitsandbytes CPU repack trap: generate (no grad, eval) and then train: LoRA weights must still change."
    cfg = lab.load_config(TINY)
    model, tok = lab.load_model(lab.resolve_model_path(cfg['model'], tmp_path), bits=4)
    assert lab.disable_cpu_repack(model) > 0
    model = lab.add_lora(model, cfg['lora'])
    lab.generate(model.eval(), tok, 'smollm2', 'Who are you?', max_new_tokens=3)
    with torch.no_grad(): model(torch.tensor([[1, 2, 3]]))
    rows = lab.build_dataset(cfg, tok, verbose=False)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        loss = model(**lab.collate(rows[:2], tok.eos_token_id)).loss; loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if 'lora_B' in n and p.requires_grad)
        opt.step(); opt.zero_grad()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters() if 'lora_A' in n and p.requires_grad)

def test_deepspeed_refused_clearly(tmp_path):
    with pytest.raises(NotImplementedError, match='ZeRO-2'): lab.train(TINY, tmp_path, deepspeed='zero2', verbose=False)
