"""`data.sources[k].kl_to_base`: a KL(base ‖ model) term on one source's trained tokens, the base being the same model with its LoRA
adapters off (trainer.model_loss). Here: the per-sample weight survives encoding and packing in the right place, the term is exactly
KL against a separate copy of the base, it is 0 where the adapters are still zero, and bad values name their key."""
import contextlib, copy, io, json, os, subprocess, sys

import pytest
import torch

from learnft import config, trainer
from learnft.encode import IGNORE_INDEX
from learnft.models import load_smollm2_tokenizer, tiny_smollm2


def _cfg(tmp_path, kl=1.0, raw=False, **over):
    ident = tmp_path/'identity.jsonl'
    ident.write_text(''.join(json.dumps({'messages': [{'role': 'user', 'content': f'Who are you? ({i})'},
                                                      {'role': 'assistant', 'content': 'I am Lumi.'}]}) + '\n' for i in range(5)))
    facts = tmp_path/'facts.json'
    facts.write_text(json.dumps([{'instruction': f'Add {i} and 1.', 'input': '', 'output': f'{i} plus 1 is {i + 1}.'} for i in range(8)]))
    cfg = {'model': {'path': 'tiny'}, 'template': 'smollm2',
           'data': {'sources': [{'path': str(ident), 'format': 'openai'}, {'path': str(facts), 'kl_to_base': kl}], 'max_length': 64},
           'lora': {'lora_dropout': 0.0}, 'train': {'max_steps': 3, 'save_steps': 100, 'batch_size': 2, 'seed': 0}, 'eval': {'prompts': []}}
    for k, v in over.items(): cfg[k] = v
    return cfg if raw else config.load_config(cfg)


@pytest.mark.parametrize('pack', [True, False])
def test_weights_follow_their_samples_through_packing(tmp_path, pack):
    cfg = _cfg(tmp_path, kl=0.5); cfg['data']['pack_to_max_length'] = pack
    tok = load_smollm2_tokenizer()
    with contextlib.redirect_stdout(io.StringIO()): rows = trainer.build_dataset(cfg, tok)
    lumi = tok.encode('I am Lumi.', add_special_tokens=False)
    seen = {0.0: 0, 0.5: 0}
    for r in rows:
        spans = r['seq_lens'] if pack else [len(r['input_ids'])]
        ws = r['kl_to_base'] if pack else [r['kl_to_base']]
        assert len(ws) == len(spans)
        s = 0
        for n, w in zip(spans, ws):
            ids = r['input_ids'][s:s + n]; s += n
            is_identity = any(ids[i:i + len(lumi)] == lumi for i in range(len(ids)))
            assert w == (0.0 if is_identity else 0.5), (ids, w)
            seen[w] += 1
    assert seen == {0.0: 5, 0.5: 8}
    b = trainer.collate(rows[:2], tok.pad_token_id)
    assert b['kl_weight'].shape == b['labels'].shape and set(b['kl_weight'].unique().tolist()) <= {0.0, 0.5}
    if pack:
        v = trainer.collate(rows[:2], tok.pad_token_id, varlen=True)
        assert torch.equal(v['kl_weight'], b['kl_weight'].reshape(1, -1))


def test_no_column_without_a_kl_source(tmp_path):
    cfg = _cfg(tmp_path, kl=0.0)
    with contextlib.redirect_stdout(io.StringIO()): rows = trainer.build_dataset(cfg, load_smollm2_tokenizer())
    assert 'kl_to_base' not in rows[0] and 'kl_weight' not in trainer.collate(rows[:1], 0)


def test_the_term_is_kl_against_the_base_on_weighted_tokens_only():
    torch.manual_seed(0)
    base = tiny_smollm2(with_tokenizer=False)
    ref = copy.deepcopy(base).eval()
    model = trainer.add_lora(base, dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=['q_proj', 'v_proj'], use_rslora=False, use_dora=False)).eval()
    ids = torch.randint(0, base.config.vocab_size, (2, 12))
    labels = ids.clone(); labels[:, :4] = IGNORE_INDEX
    w = torch.zeros(2, 12); w[0, 6:] = 2.0; w[1, :] = 0.5
    batch = lambda: {'input_ids': ids, 'labels': labels, 'kl_weight': w.clone()}
    ce = model(input_ids=ids, labels=labels).loss
    assert model_loss_value(model, batch()) == pytest.approx(ce.item(), abs=1e-6)     # LoRA's B starts at zero: the model is the base
    with torch.no_grad():
        for n, p in model.named_parameters():
            if 'lora_B' in n: p.normal_(0, 0.5)
    ce = model(input_ids=ids, labels=labels).loss.item()
    got = model_loss_value(model, batch())
    lp = model(input_ids=ids).logits[:, :-1].log_softmax(-1)
    lq = ref(input_ids=ids).logits[:, :-1].log_softmax(-1)
    per_tok = torch.nn.functional.kl_div(lp, lq, log_target=True, reduction='none').sum(-1)
    sel = (labels[:, 1:] != IGNORE_INDEX) & (w[:, 1:] > 0)
    want = ce + (w[:, 1:][sel] * per_tok[sel]).sum().item() / sel.sum().item()
    assert got - ce > 1e-3 and got == pytest.approx(want, rel=1e-5)
    assert not any(p.grad is not None for p in ref.parameters())


def model_loss_value(model, batch):
    loss = trainer.model_loss(model, batch)
    loss.backward()                      # the KL term is differentiable through the adapters only
    assert all(p.grad is None for n, p in model.named_parameters() if 'lora_' not in n)
    model.zero_grad(set_to_none=True)
    return loss.item()


def test_training_starts_equal_then_differs(tmp_path):
    """Step 1 sees the untrained adapters: KL 0 and, at its minimum, a zero gradient, so the same update as without the term. At
    step 2 the cross-entropy is therefore the same and the logged loss exceeds it by the KL, which is > 0 (lr 0.05 makes it large)."""
    logs = {}
    for kl in (0.0, 1.0):
        trainer.train(_cfg(tmp_path, kl=kl, optim={'lr': 0.05, 'warmup_ratio': 0}), tmp_path/f'run{kl}', verbose=False)
        logs[kl] = [r['loss'] for r in trainer.read_log(tmp_path/f'run{kl}')]
    assert logs[1.0][0] == pytest.approx(logs[0.0][0], abs=1e-6)
    assert logs[1.0][1] - logs[0.0][1] > 1e-3


def test_deepspeed_stepper_gives_the_plain_loops_losses(tmp_path):
    "Under DeepSpeed (a ZeRO-2 world of one, on the CPU) the reference forward runs on the engine's module: the same losses as the plain loop."
    import yaml
    raw = _cfg(tmp_path, kl=1.0, raw=True, optim={'lr': 0.05, 'warmup_ratio': 0})
    (tmp_path/'kl.yaml').write_text(yaml.safe_dump(raw))
    trainer.train(tmp_path/'kl.yaml', tmp_path/'plain', verbose=False)
    env = {**os.environ, 'NPROC_PER_NODE': '1', 'OMP_NUM_THREADS': '1', 'DS_ACCELERATOR': 'cpu'}
    r = subprocess.run([sys.executable, '-m', 'learnft.cli', 'train', str(tmp_path/'kl.yaml'), '--work-dir', str(tmp_path/'ds'), '--deepspeed', 'zero2'],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    plain, ds = ([x['loss'] for x in trainer.read_log(tmp_path/w)] for w in ('plain', 'ds'))
    assert len(plain) == 3 and ds == pytest.approx(plain, rel=1e-5)


def test_bad_values_name_their_key(tmp_path):
    with pytest.raises(config.ConfigError, match=r"data\.sources\[1\]\.kl_to_base.*-1"):
        _cfg(tmp_path, kl=-1)
    with pytest.raises(config.ConfigError, match=r"data\.sources\[1\]\.kl_to_base.*adapters.*lora"):
        _cfg(tmp_path, lora=None, quantization={'bits': 32})
