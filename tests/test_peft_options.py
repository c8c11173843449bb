"lora.use_rslora and lora.use_dora reach peft: rsLoRA's alpha/sqrt(r) scaling (lesson 05) and DoRA's magnitude vectors."
import math

from learnft import config, trainer
from learnft.models import tiny_smollm2


def _lora(**over):
    cfg = config.load_config('tiny_qlora_self_cognition', [f'lora.{k}={v}' for k, v in over.items()])
    return cfg['lora']


def test_rslora_scaling_reaches_peft():
    lora = _lora(r=16, lora_alpha=32, use_rslora='true', target_modules='[q_proj, v_proj]')
    m = trainer.add_lora(tiny_smollm2(with_tokenizer=False), lora)
    q = m.base_model.model.model.layers[0].self_attn.q_proj
    assert math.isclose(q.scaling['default'], 32 / math.sqrt(16)) and m.peft_config['default'].use_rslora
    plain = trainer.add_lora(tiny_smollm2(with_tokenizer=False), _lora(r=16, lora_alpha=32, target_modules='[q_proj, v_proj]'))
    assert math.isclose(plain.base_model.model.model.layers[0].self_attn.q_proj.scaling['default'], 32 / 16)


def test_dora_adds_magnitudes_and_trains():
    import torch
    m = trainer.add_lora(tiny_smollm2(with_tokenizer=False), _lora(use_dora='true', target_modules='[q_proj, v_proj]'))
    names = [n for n, p in m.named_parameters() if p.requires_grad]
    assert any('lora_magnitude_vector' in n for n in names) and m.peft_config['default'].use_dora
    ids = torch.randint(0, 1000, (1, 12))
    m(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if p.requires_grad and 'lora_A' in n)


def test_full_fine_tuning_with_lora_null(tmp_path):
    "lora: null trains every weight of a 16/32-bit base, ships a whole model that loads without peft, and resumes exactly."
    import pytest, torch
    from transformers import AutoModelForCausalLM
    from learnft import checkpoint
    with pytest.raises(config.ConfigError, match="lora': null \\(full fine-tuning\\).*quantization.bits to 16 or 32"):
        config.load_config('tiny_qlora_self_cognition', ['lora=null'])
    opts = ['lora=null', 'quantization.bits=32', 'train.max_steps=4', 'train.save_steps=2', 'eval.prompts=[]', 'optim.lr=1e-3']
    cfg = config.load_config('tiny_qlora_self_cognition', opts)
    s = trainer.train(cfg, tmp_path/'full', verbose=False)
    assert 'adapter' not in s and s['steps_run'] == 4
    base = AutoModelForCausalLM.from_pretrained(s['base']); tuned = AutoModelForCausalLM.from_pretrained(s['model'])
    moved = [n for (n, a), b in zip(base.named_parameters(), tuned.parameters()) if not torch.equal(a, b)]
    assert len(moved) == len(list(base.parameters()))                  # every weight trained, not only adapters
    trainer.train(cfg, tmp_path/'crash', verbose=False, stop_at=3)       # last checkpoint: 2
    trainer.train(cfg, tmp_path/'crash', resume=True, verbose=False)
    a, b = trainer.read_log(tmp_path/'full'), trainer.read_log(tmp_path/'crash')
    assert max(abs(x['loss'] - y['loss']) for x, y in zip(a, b)) < 1e-5, (a, b)
