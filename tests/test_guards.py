"""Guards against bad data and diverging runs: a malformed JSON line names its file and line, rows the format cannot map are
counted and reported while the rest trains (or stop the run with data.on_bad_rows: error), a non-finite loss or gradient
norm stops training naming the step and the last good checkpoint, a micro-batch with no trained token is skipped and counted."""
import json, subprocess, sys

import pytest
import torch

from learnft import checkpoint, config, trainer
from learnft.formats import DataError, load_rows, to_conversations
from learnft.encode import IGNORE_INDEX


def _mixed(tmp_path):
    "Good rows, two rows alpaca cannot map (instruction null, output a list), and nothing malformed."
    rows = [{'instruction': f'Add {i} and 1.', 'input': '', 'output': str(i + 1)} for i in range(6)]
    rows[2] = {'instruction': None, 'input': '', 'output': 'x'}
    rows[4] = {'instruction': 'Say hi.', 'input': '', 'output': 7}
    p = tmp_path/'mixed.jsonl'; p.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return p


def test_malformed_json_line_names_file_and_line(tmp_path):
    p = tmp_path/'bad.jsonl'
    p.write_text('{"instruction": "a", "output": "b"}\n\n{"instruction": "c", "output": "d"\n')
    with pytest.raises(DataError, match=r'bad\.jsonl, line 3, column \d+: not valid JSON'): load_rows(p)
    q = tmp_path/'bad.json'; q.write_text('[{"instruction": "a", "output": "b"},\n {"instruction": "c" "output": "d"}]')
    with pytest.raises(DataError, match=r'bad\.json, line 2, column \d+: not valid JSON'): load_rows(q)
    r = tmp_path/'list.jsonl'; r.write_text('{"text": "a"}\n["not", "a", "row"]\n')
    with pytest.raises(DataError, match=r'list\.jsonl, line 2: expected a JSON object'): load_rows(r)


def test_unmappable_rows_counted_and_reported(tmp_path):
    ds = load_rows(_mixed(tmp_path))
    conv, rep = to_conversations(ds, 'alpaca', verbose=False, on_bad_rows='drop')
    assert (rep.total, rep.kept, rep.dropped['the format cannot map it']) == (6, 4, 2)
    text = repr(rep)
    assert "row 2: field 'instruction' should be str, got NoneType" in text and "row 4: field 'output' should be str, got int" in text
    with pytest.raises(DataError, match="row 2: field 'instruction' should be str"):
        to_conversations(ds, 'alpaca', verbose=False, on_bad_rows='error')


def _tiny(tmp_path, **over):
    cfg = config.load_config('tiny_qlora_self_cognition', ['eval.prompts=[]', 'train.save_steps=2'])
    for k, v in over.items():
        sec, key = k.split('.'); cfg[sec][key] = v
    return cfg


def test_cli_bad_rows_report_and_train_on(tmp_path):
    cfg = _tiny(tmp_path)
    cfg['data'].update(builder=None, path=str(_mixed(tmp_path)), format='alpaca', sources=[])
    cfg['train']['max_steps'] = 2
    (tmp_path/'cfg.yaml').write_text(json.dumps(cfg))
    r = subprocess.run([sys.executable, '-m', 'learnft.cli', 'train', str(tmp_path/'cfg.yaml'), '--work-dir', str(tmp_path/'run')],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert '6 rows read, 4 kept, 2 dropped' in r.stdout and 'dropped 2: the format cannot map it' in r.stdout
    assert "e.g. row 2: field 'instruction' should be str" in r.stdout
    cfg['data']['on_bad_rows'] = 'error'; (tmp_path/'cfg.yaml').write_text(json.dumps(cfg))
    r = subprocess.run([sys.executable, '-m', 'learnft.cli', 'train', str(tmp_path/'cfg.yaml'), '--work-dir', str(tmp_path/'run2')],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert "learnft train: error: row 2: field 'instruction' should be str" in r.stderr
    bad = tmp_path/'broken.jsonl'; bad.write_text('{"instruction": "a", "output": "b"}\n{oops}\n')
    cfg['data']['path'] = str(bad); (tmp_path/'cfg.yaml').write_text(json.dumps(cfg))
    r = subprocess.run([sys.executable, '-m', 'learnft.cli', 'train', str(tmp_path/'cfg.yaml'), '--work-dir', str(tmp_path/'run3')],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and 'Traceback' not in r.stderr and 'broken.jsonl, line 2, column 2: not valid JSON' in r.stderr


def test_diverging_run_stops_naming_step_and_checkpoint(tmp_path):
    # Adam moves every weight by about lr per step: at 1e30 the first update makes B·A overflow float32
    cfg = _tiny(tmp_path, **{'optim.lr': 1e30, 'optim.warmup_ratio': 0.0, 'optim.scheduler': 'constant', 'train.max_steps': 4,
                             'train.save_steps': 1, 'lora.lora_dropout': 0.0})
    with pytest.raises(trainer.TrainingDiverged) as e: trainer.train(cfg, tmp_path/'run', verbose=False)
    msg = str(e.value)
    step = int(msg.split()[1].rstrip(':'))
    assert 'is nan' in msg or 'is inf' in msg, msg
    cps = checkpoint.checkpoints(tmp_path/'run')
    assert cps and all(int(p.name.split('-')[1]) < step for p in cps), (msg, cps)
    assert cps[-1].name in msg and '--resume' in msg
    logged = trainer.read_log(tmp_path/'run')
    assert [r['step'] for r in logged] == list(range(1, step)) and all(r['loss'] == r['loss'] for r in logged)
    from safetensors.torch import load_file
    w = load_file(str(cps[-1]/'adapter'/'adapter_model.safetensors'))
    assert all(torch.isfinite(t).all() for t in w.values())       # the last good checkpoint is intact


def test_micro_batch_without_trained_token_is_skipped():
    model = torch.nn.Linear(2, 2)
    class Stepper(trainer.PlainStepper):
        def forward(self, b): return (model(b['x']).sum() - b['labels'].clamp(min=0).sum()) ** 2 / 100
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    s = Stepper(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0), 1.0, torch.device('cpu'))
    batches = {0: {'x': torch.ones(1, 2), 'labels': torch.tensor([[IGNORE_INDEX, 5, 6]])},
               1: {'x': torch.ones(1, 2), 'labels': torch.tensor([[3, IGNORE_INDEX, IGNORE_INDEX]])}}   # only position 0: nothing after the shift
    loss, tokens = trainer.optimizer_step(s, [[0], [1]], lambda idx: batches[idx[0]])
    assert s.skipped == 1 and tokens == 2 and loss > 0
    assert trainer.optimizer_step(s, [[1]], lambda idx: batches[idx[0]]) == (None, 0) and s.skipped == 2


def test_tensorboard_events_written(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    cfg = _tiny(tmp_path, **{'train.max_steps': 3})
    cfg['data']['val_size'] = 4
    trainer.train(cfg, tmp_path/'run', verbose=False)
    ea = EventAccumulator(str(tmp_path/'run'/'tensorboard')); ea.Reload()
    tags = set(ea.Tags()['scalars'])
    assert {'train/loss', 'train/lr', 'train/grad_norm', 'train/tokens_per_s', 'val/loss'} <= tags, tags
    losses = [e.value for e in ea.Scalars('train/loss')]
    assert losses == pytest.approx([r['loss'] for r in trainer.read_log(tmp_path/'run')], abs=1e-5)


def test_cfg_option_that_is_not_yaml_names_the_option():
    "A --cfg-options value the shell cut at a space is a ConfigError naming the option and the fix, not a YAML traceback."
    with pytest.raises(config.ConfigError, match=r"--cfg-options 'data.sources=\[\{builder:': the value is not valid YAML .*quote an option"):
        config.load_config('tiny_qlora_self_cognition', ['data.sources=[{builder:'])


def test_diverging_deepspeed_run_stops_every_rank(tmp_path):
    "Under ZeRO-2 a rank must not stop alone (the other would wait in the reduce forever): both stop on the global gradient norm."
    cfg = _tiny(tmp_path, **{'optim.lr': 1e30, 'optim.warmup_ratio': 0.0, 'optim.scheduler': 'constant', 'train.max_steps': 4,
                             'train.save_steps': 1, 'lora.lora_dropout': 0.0, 'train.num_threads': 1})
    (tmp_path/'cfg.yaml').write_text(json.dumps(cfg))
    import os
    r = subprocess.run([sys.executable, '-m', 'learnft.cli', 'train', str(tmp_path/'cfg.yaml'), '--work-dir', str(tmp_path/'run'), '--deepspeed', 'zero2'],
                       env={**os.environ, 'NPROC_PER_NODE': '2', 'OMP_NUM_THREADS': '1'}, capture_output=True, text=True, timeout=400)
    assert r.returncode != 0
    assert r.stderr.count('so training stopped. The last good checkpoint is') == 2, r.stderr[-3000:]     # both ranks, no hang
    assert 'the gradient norm is' in r.stderr and checkpoint.checkpoints(tmp_path/'run')


def test_yaml_file_with_scientific_learning_rate(tmp_path):
    "`lr: 1e-4` in a YAML file (PyYAML reads YAML 1.1, where that is text) is the number 1e-4, as in --cfg-options."
    p = tmp_path/'c.yaml'; p.write_text('model: {path: tiny}\ndata: {builder: self_cognition}\noptim: {lr: 1e-4, weight_decay: 5E-2}\n')
    cfg = config.load_config(p)
    assert cfg['optim']['lr'] == 1e-4 and cfg['optim']['weight_decay'] == 0.05
    p.write_text('model: {path: tiny}\ndata: {builder: self_cognition}\noptim: {lr: fast}\n')
    with pytest.raises(config.ConfigError, match="config key 'optim.lr': got 'fast'; allowed: a number"): config.load_config(p)
