"""The GPU benchmarks' measuring helpers (benchmarks/qlora_gpu.py), checked on the CPU with a tiny 7B-shaped model.

Lesson 07's GPU section and benchmarks/bench_{dequant,qlora_7b}_gpu.py build and measure with these; CI has no GPU,
so this is where a broken helper shows up before a device run is spent on it.
"""
import math, sys, warnings
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'benchmarks'))
bnb = pytest.importorskip('bitsandbytes')
from qlora_gpu import llama_7b_config, build_llama_for_finetune, train_step_memory, optimizer_state_bytes, FINETUNE_BUILDS


SMALL = dict(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=4, vocab_size=1000)


def test_llama_7b_shape_and_meta_build():
    assert llama_7b_config().num_hidden_layers == 32
    small = llama_7b_config(2, **SMALL)
    n = sum(p.numel() for p in build_llama_for_finetune(small, 'full', 'meta', gradient_checkpointing=False).parameters())
    assert n == 2 * 1000 * 128 + 128 + 2 * (4 * 128 * 128 + 3 * 128 * 256 + 2 * 128)
    with pytest.raises(ValueError, match="method='qlora4'.*allowed"): build_llama_for_finetune(small, 'qlora4', 'meta')
    assert FINETUNE_BUILDS == ('qlora', 'lora', 'full')


def test_qlora_build_is_4bit_and_measures_8bit_state():
    small = llama_7b_config(2, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        tq = build_llama_for_finetune(small, 'qlora', 'cpu', r=8, alpha=16, dtype=torch.float32)
    base = tq.base_model.model
    assert not [n for n, m in base.model.layers.named_modules() if type(m) is nn.Linear and 'lora_' not in n]  # no float base weight left
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in base.modules()) == 14 and type(base.lm_head) is nn.Linear
    r = train_step_memory(tq, bnb.optim.AdamW8bit, seq_len=32, steps=2, min_8bit_size=0)
    assert r['trainable'] == 2 * 8 * (4 * (128 + 128) + 2 * (128 + 256) + (256 + 128)) and math.isfinite(r['loss'])
    assert r['trainable'] < r['state_gpu'] < 2.1 * r['trainable'] and r['state_paged'] == 0  # two 8-bit moments + a float absmax per block


def test_optimizer_state_bytes_counts_adamw_moments():
    p = nn.Parameter(torch.randn(10, 3))
    opt = torch.optim.AdamW([p]); p.grad = torch.ones_like(p); opt.step()
    assert optimizer_state_bytes(opt) == {'gpu': 2 * 30 * 4, 'paged': 0}  # exp_avg + exp_avg_sq in fp32; the step counter left out
