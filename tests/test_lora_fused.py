"""`train.kernels: lora` (learnft.speed.fuse_lora, lesson 08b): LoRA's dropout and A matmul as Triton kernels that store no mask.

The kernels run here under Triton's CPU interpreter, in a fresh process each time (TRITON_INTERPRET must be set before triton is
first imported). The GPU run checks the same maths on the H200 and times it: benchmarks/bench_lora_dropout_gpu.py."""
import copy, json, os, random, subprocess, sys
from pathlib import Path

import pytest
import torch

from learnft import config, trainer
from learnft.speed import dropout_threshold, interpreted

pytest.importorskip('triton')
ROOT = Path(__file__).resolve().parent.parent


def run_interpreted(code: str) -> dict:
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=900,
                       env={**os.environ, 'TRITON_INTERPRET': '1', 'PYTHONWARNINGS': 'ignore'})
    out = [l for l in r.stdout.splitlines() if l.startswith('RESULT ')]
    assert r.returncode == 0 and out, r.stdout[-2000:] + r.stderr[-3000:]
    return json.loads(out[-1][7:])


def test_the_op_matches_torch_on_its_own_mask_for_other_shapes():
    """Random shapes (widths a multiple of 8, not of the tiles; ranks up to 70, not powers of two; tokens past one program's
    share of A's gradient) and rates: forward and both gradients against torch on the kernels' mask, in float32. The bound is
    2.3x the largest difference measured over these cases when the test was written (4.4e-7: sums taken in another order)."""
    rng = random.Random(3)
    cases = [(rng.randint(1, 1600), 8 * rng.randint(1, 40), rng.randint(1, 70), rng.choice([0.0, 0.05, 0.1, 0.5, 0.9])) for _ in range(5)]
    code = f"""
import json
from learnft.speed import lora_dropout_check
print('RESULT', json.dumps([lora_dropout_check(*c, seed=k) for k, c in enumerate({cases!r})]))"""
    for c in run_interpreted(code):
        assert max(c['h'], c['dx'], c['da']) < 1e-6, c
        n = c['T'] * c['K']; sd = (c['p'] * (1 - c['p']) / n) ** 0.5
        assert abs(c['kept'] - (1 - dropout_threshold(c['p'])[0] / 65536)) <= 5 * sd + 1e-12, c


def test_masks_are_independent_and_reproducible():
    code = """
import json, torch
from learnft.speed import lora_dropout_ops
m = lora_dropout_ops()['mask']
s1, s2 = torch.tensor([11]), torch.tensor([12])
a, b, a2 = m(s1, 256, 512, 0.5), m(s2, 256, 512, 0.5), m(s1, 256, 512, 0.5)
left, right = a[:, :-1].float(), a[:, 1:].float()      # neighbours share a Philox call: their bits must still be independent
print('RESULT', json.dumps(dict(same=torch.equal(a, a2), agree=(a == b).float().mean().item(),
                                 neighbours=((left - .5) * (right - .5)).mean().item() * 4, rows=(a[0] == a[1]).float().mean().item())))"""
    r = run_interpreted(code)
    n = 256 * 511; sd = (0.25 / n) ** 0.5
    assert r['same']                                  # the same seed draws the same mask: what the backward relies on
    assert abs(r['agree'] - 0.5) < 5 * sd * 2        # two seeds: independent masks agree on half the values at p 0.5
    assert abs(r['neighbours']) < 5 * 2 * sd          # no correlation between a value and the next one
    assert abs(r['rows'] - 0.5) < 0.1


def test_fused_layers_compute_what_peft_computes():
    """A config-built Llama with LoRA on every linear layer: without dropout the fused layers run peft's forward; with
    dropout one layer's output and gradients equal peft's maths on the mask its kernel drew (its seed drawn again from the same
    torch seed); in eval and with the adapters off it is peft's own forward."""
    code = """
import copy, json, torch
from transformers import LlamaConfig, LlamaForCausalLM
from peft import LoraConfig, get_peft_model
from learnft.speed import fuse_lora, lora_dropout_ops, dropout_threshold
torch.manual_seed(0)
base = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2))
ids = torch.randint(0, 128, (2, 24))
def lora(p):
    m = get_peft_model(copy.deepcopy(base), LoraConfig(r=8, lora_alpha=16, lora_dropout=p, target_modules='all-linear'))
    for n, w in m.named_parameters():
        if 'lora_B' in n: torch.nn.init.normal_(w, std=0.1)
    return m
rel = lambda u, v: ((u - v).abs().max() / v.abs().max()).item()
out = {}
m1 = lora(0.0); m2 = copy.deepcopy(m1); out['fused'] = fuse_lora(m2); out['again'] = fuse_lora(m2)
for m in (m1, m2): m.train(); m(input_ids=ids, labels=ids).loss.backward()
out['p0'] = max(rel(b.grad, a.grad) for a, b in zip(m1.parameters(), m2.parameters()) if a.grad is not None)
m = lora(0.2); ref_model = copy.deepcopy(m); fuse_lora(m); m.train()
layer = m.base_model.model.model.layers[0].mlp.down_proj
x = torch.randn(3, 5, layer.in_features, requires_grad=True)
torch.manual_seed(7); y = layer(x); gy = torch.randn_like(y); y.backward(gy)
torch.manual_seed(7); seed = torch.randint(2 ** 62, (1,))
keep = lora_dropout_ops()['mask'](seed, 15, layer.in_features, 0.2).view(3, 5, -1)
A, B = (w.detach().clone().requires_grad_() for w in (layer.lora_A['default'].weight, layer.lora_B['default'].weight))
x2 = x.detach().clone().requires_grad_()
ref = layer.base_layer(x2) + ((x2 * keep * dropout_threshold(0.2)[1]) @ A.T) @ B.T * layer.scaling['default']
ref.backward(gy)
out.update(y=rel(y, ref), dx=rel(x.grad, x2.grad), dA=rel(layer.lora_A['default'].weight.grad, A.grad),
           dB=rel(layer.lora_B['default'].weight.grad, B.grad))
m.eval(); ref_model.eval()
with torch.no_grad(): out['eval'] = torch.equal(m(input_ids=ids).logits, ref_model(input_ids=ids).logits)
m.train()
with m.disable_adapter(), torch.no_grad(): out['off'] = torch.equal(m(input_ids=ids).logits, base(input_ids=ids).logits)
print('RESULT', json.dumps(out))"""
    r = run_interpreted(code)
    assert r['fused'] == 2 * 7 and r['again'] == 0, r           # every projection of both layers, once
    assert r['p0'] == 0, r                                       # without dropout it is peft's own forward
    assert max(r['y'], r['dx'], r['dA'], r['dB']) < 1e-6, r        # measured 1.9e-7 when written
    assert r['eval'] and r['off'], r


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"lora_dropout should be in \[0, 1\), got 1"): dropout_threshold(1)
    with pytest.raises(RuntimeError, match="a multiple of 8 expected, got \\(4, 12\\)"):
        interpreted('lora_dropout_check', 4, 12, 2, 0.1)


def test_lora_kernels_refused_off_a_gpu_and_without_adapters(tmp_path):
    from test_kernels import BASE
    cfg = copy.deepcopy(BASE); cfg['train']['kernels'] = 'compile+lora'
    with pytest.raises(config.ConfigError, match=r"train\.kernels.*'compile\+lora' runs Triton kernels on a GPU; this run is on cpu"):
        trainer.train(cfg, tmp_path/'run', verbose=False)
    with pytest.raises(config.ConfigError, match=r"train\.kernels.*needs LoRA adapters"):
        trainer.apply_kernels(torch.nn.Linear(8, 8), 'lora')
    with pytest.raises(config.ConfigError, match=r"allowed: one of"):
        config.validate_config({**cfg, 'train': {**cfg['train'], 'kernels': 'lora+liger'}})


def test_host_benchmark_runs_under_the_interpreter(tmp_path):
    """benchmarks/bench_lora_host_gpu.py (lesson 08b, run 12) tried on the CPU: every row timed, the autotuner's chosen config
    launched directly, and the cProfile rows named without the machine's paths (the times themselves are the interpreter's)."""
    out = tmp_path/'host.json'
    r = subprocess.run([sys.executable, 'benchmarks/bench_lora_host_gpu.py', '--calls', '2', '--profile-calls', '2', '--tokens', '8',
                        '--json', str(out)], capture_output=True, text=True, cwd=ROOT, timeout=900,
                       env={**os.environ, 'TRITON_INTERPRET': '1', 'PYTHONWARNINGS': 'ignore'})
    assert r.returncode == 0 and out.exists(), r.stdout[-2000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert len(res['us']) == 7 and all(v > 0 for v in res['us'].values()), res['us']
    assert res['profile'] and not any(p['func'].startswith('/') for p in res['profile'])
    assert 'us more per LoRA layer than peft' in r.stdout


def test_backward_computes_only_the_gradients_asked_for():
    """The backward takes each gradient it is asked for alone as it takes it with both: x without a gradient (as layer 0's input,
    from the frozen embedding, is) or A frozen leaves the other gradient equal, bit for bit, to the one computed with both."""
    code = """
import json, torch
from learnft.speed import lora_dropout_ops
ops = lora_dropout_ops()
g = torch.Generator().manual_seed(0)
x, a, gh = torch.randn(70, 48, generator=g), torch.randn(6, 48, generator=g), torch.randn(70, 6, generator=g)
s = torch.tensor([5])
def grads(x_grad, a_grad):
    xx, aa = x.clone().requires_grad_(x_grad), a.clone().requires_grad_(a_grad)
    ops['op'](xx, aa, s, 0.25).backward(gh)
    return xx.grad, aa.grad
both, only_a, only_x = grads(True, True), grads(False, True), grads(True, False)
print('RESULT', json.dumps(dict(a=torch.equal(both[1], only_a[1]), x=torch.equal(both[0], only_x[0]))))"""
    r = run_interpreted(code)
    assert r == dict(a=True, x=True), r
