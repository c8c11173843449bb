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


def test_dequant_shapes_and_intensity():
    from qlora_gpu import dequant_shapes, dequant_intensity
    assert dequant_shapes('4096,11008x4096') == [(4096, 4096), (11008, 4096)]
    assert dequant_shapes([16, (3, 5)]) == [(16, 16), (3, 5)]
    it = dequant_intensity()          # per value: 0.5 B packed + 1/64 B constant + 2 B written; 1 + 2/64 FLOPs
    assert it['bytes_per_value'] == 0.5 + 1 / 64 + 2 and it['flops_per_value'] == 1 + 2 / 64
    assert abs(it['flop_per_byte'] - 0.41) < 0.005
    assert dequant_intensity(out_bytes=4)['flop_per_byte'] < it['flop_per_byte']   # an fp32 output moves more bytes


def test_triton_dequant_refuses_partial_blocks():
    import bitsandbytes.functional as F
    from learnft.quant import QuantState
    from qlora_gpu import dequantize_4bit_triton
    packed, b = F.quantize_4bit(torch.randn(3, 30), blocksize=64, quant_type='nf4')
    with pytest.raises(ValueError, match='whole blocks: 90 values, blocksize 64'):
        dequantize_4bit_triton(packed, QuantState.from_bnb(b))


def test_triton_dequant_matches_learnft_in_the_interpreter():
    """The Triton kernel's maths, run by Triton's CPU interpreter where triton is installed (CI's CPU torch has none; the
    GPU run checks it bit for bit against bitsandbytes: benchmarks/results/bench_dequant_gpu_h200.txt). The interpreter
    rounds float32 -> bf16 by truncation, so the kernel writes float32 here, compared with learnft's float32 values. In a
    fresh interpreter: TRITON_INTERPRET must be set before triton is first imported."""
    pytest.importorskip('triton')
    import subprocess, os
    code = """
import dataclasses, sys, torch, bitsandbytes.functional as F
sys.path.insert(0, 'benchmarks')
from learnft.quant import QuantState, dequantize_4bit
from qlora_gpu import dequantize_4bit_triton
for shape, dq in (((128, 320), True), ((64, 128), False)):
    packed, b = F.quantize_4bit(torch.randn(*shape, dtype=torch.bfloat16), blocksize=64, quant_type='nf4', compress_statistics=dq)
    st = QuantState.from_bnb(b)
    ref = dequantize_4bit(packed, dataclasses.replace(st, dtype=torch.float32))   # lesson 06's dequantization, in float32
    for gather in (False, True):
        got = dequantize_4bit_triton(packed, st, torch.empty(shape), gather=gather)
        assert torch.equal(got, ref), (shape, dq, gather, (got - ref).abs().max().item())
print('ok')
"""
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
                       env={**os.environ, 'TRITON_INTERPRET': '1'}, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith('ok'), r.stdout[-2000:] + r.stderr[-3000:]


def test_mfu_benchmark_host_flags_on_the_cpu(tmp_path):
    """bench_mfu_gpu.py's `hostprof` and `itemsites` flags (run 12 of lesson 08b), tried on the CPU's test shape: step 7 under
    cProfile lists the host's functions by own time (the backward's engine among them), and the callers of Tensor.item() are
    counted by file and line (the trainer's reads of the loss among them)."""
    import json, os, subprocess
    out = tmp_path/'rows.json'
    r = subprocess.run([sys.executable, 'benchmarks/bench_mfu_gpu.py', '--shape', 'test', '--seq', '256', '--steps', '8',
                        '--variants', 'varlen:2:hostprof,varlen:2:itemsites', '--profile', 'varlen:2:hostprof', '--work', str(tmp_path),
                        '--json', str(out)],
                       cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=900,
                       env={**os.environ, 'PYTHONWARNINGS': 'ignore'})
    assert r.returncode == 0 and out.exists(), r.stdout[-2000:] + r.stderr[-2000:]
    host, items = json.loads(out.read_text())
    top = host['host']['top']
    assert len(top) == 25 and 0 < sum(t['own_s'] for t in top) <= host['host']['total'] * 1.001, host['host']
    assert any('run_backward' in t['func'] for t in top), [t['func'] for t in top]
    assert not any(t['func'].startswith('/') for t in top)              # package-relative names, no machine paths
    assert any(k.startswith('learnft/trainer.py') for k in items['item_sites']), items['item_sites']
    assert 'host' not in items and 'item_sites' not in host
    assert set(host['gaps']['idle_s']) == {'forward', 'backward', 'clip + AdamW + read', 'other'}   # --profile's idle by phase
    assert 'gaps' not in items                                      # (all zero here: the CPU launches no kernels)


def test_gaps_by_phase_charges_each_gap_to_the_launch_that_ended_it(tmp_path):
    """bench_mfu_gpu.py --profile's idle attribution on a made-up trace: two kernels launched in the forward, one in the backward
    (its gap is the backward's), one from outside every range (other); overlapping GPU work is no gap."""
    import json
    from bench_mfu_gpu import gaps_by_phase
    ann = lambda name, ts, dur: {'cat': 'user_annotation', 'name': f'learnft:{name}', 'ts': ts, 'dur': dur}
    run = lambda c, ts: {'cat': 'cuda_runtime', 'name': 'cudaLaunchKernel', 'ts': ts, 'dur': 1, 'args': {'correlation': c}}
    ker = lambda c, ts, dur, cat='kernel': {'cat': cat, 'name': f'k{c}', 'ts': ts, 'dur': dur, 'args': {'correlation': c}}
    ev = [ann('forward', 0, 100), ann('backward', 100, 100), run(1, 10), run(2, 20), run(3, 150), run(4, 300),
          ker(1, 30, 40), ker(2, 60, 20), ker(3, 180, 10, 'gpu_memcpy'), ker(4, 400, 5)]
    (tmp_path/'t.json').write_text(json.dumps({'traceEvents': ev}))
    g = gaps_by_phase(tmp_path/'t.json')
    assert g['idle_s'] == {'forward': 0.0, 'backward': 100e-6, 'clip + AdamW + read': 0.0, 'other': 210e-6}, g
    assert g['gaps_over_50us'] == {'forward': 0, 'backward': 1, 'clip + AdamW + read': 0, 'other': 1}, g
