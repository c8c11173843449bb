"""learnft.lora: peft parity and adapter round trips on tiny config-built models, property tests, bad input."""
import copy, json, os

import pytest, torch
from torch import nn
from hypothesis import given, settings, HealthCheck, strategies as st
from learnft.models import smollm2_config, tiny_smollm2
from learnft.lora import (LoraLinear, inject_lora, merge_lora, unmerge_lora, merge_and_unload, lora_layers, trainable_params,
                          find_lora_targets, linear_module_names, lora_state_dict, save_lora_adapter, load_lora_adapter,
                          ADAPTER_CONFIG, ADAPTER_WEIGHTS)

peft = pytest.importorskip('peft')
from peft import LoraConfig, PeftModel, get_peft_model

LEAVES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']
VOCAB = 512   # small vocabulary: the LM head dominates a tiny model's cost
IDS = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(0))

@pytest.fixture(scope='module')
def tiny():
    return tiny_smollm2(num_hidden_layers=2, with_tokenizer=False, vocab_size=VOCAB)

def _randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for l in lora_layers(model).values():
            l.lora_A.weight.copy_(torch.randn(l.lora_A.weight.shape, generator=g) * 0.1)
            l.lora_B.weight.copy_(torch.randn(l.lora_B.weight.shape, generator=g) * 0.1)
    return model

def _to_peft(ours, theirs):
    res = theirs.load_state_dict({f'base_model.model.{n}.{ab}.default.weight': getattr(l, ab).weight
                                  for n, l in lora_layers(ours).items() for ab in ('lora_A', 'lora_B')}, strict=False)
    assert not res.unexpected_keys

def _logits(m):
    with torch.no_grad(): return m(input_ids=IDS).logits

# ---- the real model's count, without memory: SmolLM2-135M on the meta device
def test_smollm2_count_matches_peft_number():
    from transformers import LlamaForCausalLM
    with torch.device('meta'): m = inject_lora(LlamaForCausalLM(smollm2_config()), 'all-linear', r=8, alpha=16)
    d = trainable_params(m)
    assert (d['trainable'], d['total']) == (2_442_240, 136_957_248)
    assert 'lm_head' not in {n for n in lora_layers(m)} and len(lora_layers(m)) == 210

# ---- parity with peft: outputs and gradients
@pytest.mark.parametrize('rslora', [False, True])
def test_outputs_and_grads_equal_peft(tiny, rslora):
    ours = _randomize(inject_lora(copy.deepcopy(tiny), 'all-linear', r=4, alpha=8, use_rslora=rslora))
    theirs = get_peft_model(copy.deepcopy(tiny), LoraConfig(r=4, lora_alpha=8, target_modules='all-linear', use_rslora=rslora))
    _to_peft(ours, theirs)
    lo, lt = ours(input_ids=IDS, labels=IDS), theirs(input_ids=IDS, labels=IDS)
    torch.testing.assert_close(lo.logits, lt.logits, rtol=0, atol=1e-6)
    lo.loss.backward(); lt.loss.backward()
    go = {f'base_model.model.{n}': p.grad for n, p in ours.named_parameters() if p.requires_grad}
    gt = {n.replace('.default', ''): p.grad for n, p in theirs.named_parameters() if p.requires_grad}
    assert set(go) == set(gt) and len(go) == 28
    for k in go: torch.testing.assert_close(go[k], gt[k], rtol=0, atol=1e-7)

@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(targets=st.lists(st.sampled_from(LEAVES), min_size=1, max_size=7, unique=True), r=st.integers(1, 16))
def test_trainable_count_equals_peft(tiny, targets, r):
    ours = inject_lora(copy.deepcopy(tiny), targets, r=r, alpha=16)
    theirs = get_peft_model(copy.deepcopy(tiny), LoraConfig(r=r, lora_alpha=16, target_modules=targets))
    assert trainable_params(ours)['trainable'] == theirs.get_nb_trainable_parameters()[0]
    assert trainable_params(ours)['total'] == theirs.get_nb_trainable_parameters()[1]

# ---- the layer: formula, init, merge/unmerge (property tests)
@settings(max_examples=15, deadline=None)
@given(k=st.integers(1, 24), d=st.integers(1, 24), r=st.integers(1, 8), alpha=st.floats(0.5, 64), rslora=st.booleans(),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_layer_is_the_formula(k, d, r, alpha, rslora, bias, seed):
    torch.manual_seed(seed)
    base = nn.Linear(k, d, bias=bias).double()
    lin = LoraLinear(copy.deepcopy(base), r, alpha, use_rslora=rslora)
    x = torch.randn(3, k, dtype=torch.double)
    assert torch.equal(lin(x), base(x))                                  # B = 0 at the start
    assert sum(p.numel() for p in lin.parameters() if p.requires_grad) == r * (d + k)
    with torch.no_grad(): lin.lora_B.weight.normal_()
    s = alpha / r**0.5 if rslora else alpha / r
    assert lin.scaling == pytest.approx(s)
    want = base(x) + s * x @ lin.lora_A.weight.T @ lin.lora_B.weight.T
    torch.testing.assert_close(lin(x), want)
    lin.merge(); torch.testing.assert_close(lin(x), want)
    lin.unmerge(); torch.testing.assert_close(lin.base_layer.weight, base.weight)

def test_b_moves_first():
    lin = LoraLinear(nn.Linear(5, 3), r=2, alpha=2)
    lin(torch.randn(4, 5)).sum().backward()
    assert lin.lora_A.weight.grad.abs().sum() == 0 and lin.lora_B.weight.grad.abs().sum() > 0 and lin.base_layer.weight.grad is None

def test_half_base_keeps_fp32_adapter():
    lin = LoraLinear(nn.Linear(8, 4).to(torch.bfloat16), r=2, alpha=4)
    assert lin.lora_A.weight.dtype == torch.float32 and lin(torch.randn(2, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16

def test_dropout_only_in_training():
    lin = LoraLinear(nn.Linear(8, 4), r=2, alpha=4, dropout=0.5)
    with torch.no_grad(): lin.lora_B.weight.normal_()
    x = torch.randn(16, 8)
    lin.eval(); assert torch.equal(lin(x), lin(x))
    lin.train(); assert not torch.equal(lin(x), lin(x))

def test_merge_unmerge_and_unload(tiny):
    ours = _randomize(inject_lora(copy.deepcopy(tiny), ['q_proj', 'down_proj'], r=4, alpha=8))
    before = _logits(ours)
    merge_lora(ours); torch.testing.assert_close(_logits(ours), before, rtol=0, atol=1e-5)
    unmerge_lora(ours); torch.testing.assert_close(_logits(ours), before, rtol=0, atol=1e-5)
    theirs = get_peft_model(copy.deepcopy(tiny), LoraConfig(r=4, lora_alpha=8, target_modules=['q_proj', 'down_proj']))
    _to_peft(ours, theirs)
    a, b = merge_and_unload(ours), theirs.merge_and_unload()
    assert not lora_layers(a) and type(a.model.layers[0].self_attn.q_proj) is nn.Linear
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for k in sa: torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=1e-7)

# ---- adapters: peft's files, both ways
@pytest.mark.parametrize('targets', ['all-linear', ['q_proj', 'v_proj'], ['model.layers.1.mlp.up_proj'], r'.*\.0\.self_attn\.[qk]_proj'])
def test_ours_loads_in_peft(tiny, tmp_path, targets):
    ours = _randomize(inject_lora(copy.deepcopy(tiny), targets, r=4, alpha=8, dropout=0.1))
    ours.eval()
    save_lora_adapter(ours, tmp_path, base_model_name_or_path='tiny')
    assert {p.name for p in tmp_path.iterdir()} == {ADAPTER_CONFIG, ADAPTER_WEIGHTS}
    theirs = PeftModel.from_pretrained(copy.deepcopy(tiny), tmp_path)
    peft_names = {n.removeprefix('base_model.model.') for n, m in theirs.named_modules() if hasattr(m, 'lora_A') and len(m.lora_A)}
    assert peft_names == set(lora_layers(ours))             # peft adapts exactly the modules we adapted, no more
    cfg = theirs.peft_config['default']
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (4, 8, 0.1)
    torch.testing.assert_close(_logits(theirs), _logits(ours), rtol=0, atol=1e-6)

@pytest.mark.parametrize('rslora', [False, True])
def test_peft_loads_in_ours(tiny, tmp_path, rslora):
    theirs = get_peft_model(copy.deepcopy(tiny), LoraConfig(r=4, lora_alpha=8, target_modules=['k_proj', 'gate_proj'], use_rslora=rslora))
    with torch.no_grad():
        for n, p in theirs.named_parameters():
            if 'lora_B' in n: p.normal_(std=0.1)
    theirs.eval(); theirs.save_pretrained(tmp_path)
    ours = load_lora_adapter(copy.deepcopy(tiny), tmp_path)
    assert len(lora_layers(ours)) == 4 and all(l.use_rslora == rslora for l in lora_layers(ours).values())
    torch.testing.assert_close(_logits(ours), _logits(theirs), rtol=0, atol=1e-6)
    from safetensors.torch import load_file
    assert set(load_file(str(tmp_path/ADAPTER_WEIGHTS))) == set(lora_state_dict(ours))

@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(targets=st.lists(st.sampled_from(LEAVES), min_size=1, max_size=7, unique=True), r=st.integers(1, 8), seed=st.integers(0, 99))
def test_round_trip_through_peft_property(tiny, tmp_path_factory, targets, r, seed):
    d = tmp_path_factory.mktemp('rt')
    ours = _randomize(inject_lora(copy.deepcopy(tiny), targets, r=r, alpha=2 * r), seed)
    save_lora_adapter(ours, d / 'a')
    PeftModel.from_pretrained(copy.deepcopy(tiny), d / 'a').save_pretrained(d / 'b')
    back = load_lora_adapter(copy.deepcopy(tiny), d / 'b')
    for k, v in lora_state_dict(ours).items(): assert torch.equal(lora_state_dict(back)[k], v)

# ---- bad input: clear errors that name the option
@pytest.mark.parametrize('kw, match', [
    (dict(target_modules=['qproj'], r=8, alpha=16), r"entry 'qproj' matches no module.*'q_proj'"),
    (dict(target_modules='nothing_here', r=8, alpha=16), r"regex 'nothing_here' matches no module.*'down_proj'"),
    (dict(target_modules=['mlp'], r=8, alpha=16), r"not nn.Linear.*LlamaMLP"),
    (dict(target_modules=[], r=8, alpha=16), r"target_modules must be"),
    (dict(target_modules='all-linear', r=0, alpha=16), r"`r`.*positive integer, got 0"),
    (dict(target_modules='all-linear', r=-2, alpha=16), r"`r`.*got -2"),
    (dict(target_modules='all-linear', r=2.5, alpha=16), r"`r`.*got 2.5"),
    (dict(target_modules='all-linear', r=8, alpha=0), r"`alpha`.*got 0"),
    (dict(target_modules='all-linear', r=8, alpha=16, dropout=1.0), r"`dropout`.*got 1.0"),
])
def test_bad_inject(tiny, kw, match):
    m = copy.deepcopy(tiny)
    with pytest.raises(ValueError, match=match): inject_lora(m, **kw)
    assert not lora_layers(m) and all(p.requires_grad for p in m.parameters())   # failed calls leave the model alone

def test_inject_twice_and_merge_twice(tiny):
    m = inject_lora(copy.deepcopy(tiny), ['q_proj'], r=2, alpha=4)
    with pytest.raises(ValueError, match='already has 2 LoRA layers'): inject_lora(m, ['v_proj'], r=2, alpha=4)
    merge_lora(m)
    with pytest.raises(RuntimeError, match='already merged'): merge_lora(m)
    with pytest.raises(RuntimeError, match='unmerge_lora'): save_lora_adapter(m, '/tmp/never-written')
    unmerge_lora(m)
    with pytest.raises(RuntimeError, match='not merged'): unmerge_lora(m)
    with pytest.raises(ValueError, match='no LoRA layers'): merge_lora(copy.deepcopy(tiny))

def test_adapter_for_another_base_names_the_module(tiny, tmp_path):
    other = tiny_smollm2(num_hidden_layers=2, hidden_size=32, intermediate_size=64, with_tokenizer=False, vocab_size=VOCAB)
    save_lora_adapter(inject_lora(other, ['v_proj'], r=4, alpha=8), tmp_path)
    m = copy.deepcopy(tiny)
    with pytest.raises(ValueError, match=r'module model\.layers\.0\.self_attn\.v_proj: lora_A has shape \(4, 32\).*\(4, 64\)'):
        load_lora_adapter(m, tmp_path)
    assert not lora_layers(m)                                 # checked before touching the model

def test_unsupported_peft_options_are_named(tiny, tmp_path):
    theirs = get_peft_model(copy.deepcopy(tiny), LoraConfig(r=2, lora_alpha=4, target_modules=['q_proj'], use_dora=True))
    theirs.save_pretrained(tmp_path)
    with pytest.raises(NotImplementedError, match='use_dora=True'): load_lora_adapter(copy.deepcopy(tiny), tmp_path)
    (tmp_path/ADAPTER_CONFIG).write_text(json.dumps({'peft_type': 'PREFIX_TUNING'}))
    with pytest.raises(ValueError, match="peft_type must be 'LORA'"): load_lora_adapter(copy.deepcopy(tiny), tmp_path)
