"""learnft.quant: bit-exact parity with bitsandbytes' CPU quantize_4bit / dequantize_4bit (hypothesis property tests over
shapes, block sizes, nf4/fp4, double quantization, dtypes), the 8-bit nested quantizer, packing, memory numbers, bad input."""
import math, os

import pytest, torch
from hypothesis import given, settings, assume, HealthCheck, strategies as st
from learnft.quant import (VALID_BLOCKSIZES, QUANT_TYPES, QuantState, nf4_codebook, fp4_codebook, int4_codebook, dynamic_map,
                           blockwise_absmax, nearest_code, pack_4bit, unpack_4bit, quantize_4bit, dequantize_4bit,
                           quantize_blockwise, dequantize_blockwise, assert_same_as_bnb, same_bits, constant_bits,
                           bits_per_param, model_memory, lloyd_max_normal, codebook_mse_normal, compare_with_bnb_dequant,
                           bnb_cpu_dequant_kernel, bnb_dequant_suspect, bnb_avx512_absmax_index, dequantize_4bit_reference,
                           cpu_features)
from pathlib import Path

F = pytest.importorskip('bitsandbytes.functional')

@pytest.fixture(autouse=True)
def eager_bitsandbytes():
    "bitsandbytes torch.compile's its CPU fallbacks with static shapes (a recompile per shape): compare against eager."
    old = torch._dynamo.config.disable
    torch._dynamo.config.disable = True
    yield
    torch._dynamo.config.disable = old

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# ---- codebooks
def test_codebooks_are_bitsandbytes_tables_bit_for_bit():
    assert same_bits(nf4_codebook(), F.get_4bit_type('nf4', device='cpu'))
    assert same_bits(fp4_codebook(), F.get_4bit_type('fp4', device='cpu'))
    assert same_bits(dynamic_map(), F.create_dynamic_map())

def test_nf4_shape_of_the_code():
    cb = nf4_codebook()
    assert (cb > 0).sum() == 8 and (cb < 0).sum() == 7 and (cb == 0).sum() == 1 and cb.min() == -1 and cb.max() == 1
    sym = nf4_codebook(use_extra_value=False)
    assert (sym > 0).sum() == 7 and (sym < 0).sum() == 7 and torch.allclose(sym[sym > 0], -sym[sym < 0].flip(0))

def test_int4_is_an_even_grid():
    cb = int4_codebook()
    assert torch.allclose(cb.diff(), torch.full((15,), 1 / 7)) and cb[8] == 0 and cb[15] == 1

# ---- the main property: random tensors, every option, bit-exact with bitsandbytes
shapes = st.one_of(
    st.tuples(st.integers(1, 5000)),
    st.tuples(st.integers(1, 90), st.integers(1, 90)),
    st.tuples(st.integers(1, 12), st.integers(1, 12), st.integers(1, 40)))

@settings(max_examples=50, **SETTINGS)
@given(shape=shapes, blocksize=st.sampled_from(VALID_BLOCKSIZES), quant_type=st.sampled_from(['nf4', 'fp4']),
       dq=st.booleans(), dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
       log_scale=st.floats(-4, 1), seed=st.integers(0, 2**31 - 1))
def test_bit_exact_with_bitsandbytes(shape, blocksize, quant_type, dq, dtype, log_scale, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 10 ** log_scale).to(dtype)
    assert_same_as_bnb(x, blocksize, quant_type, dq)

@settings(max_examples=20, **SETTINGS)
@given(n=st.integers(1, 3000), blocksize=st.sampled_from(VALID_BLOCKSIZES), quant_type=st.sampled_from(['nf4', 'fp4']),
       dq=st.booleans(), data=st.data())
def test_bit_exact_on_awkward_values(n, blocksize, quant_type, dq, data):
    "Zero runs, exact codebook levels, midpoints between levels, tiny and huge magnitudes, repeated values."
    cb = (nf4_codebook() if quant_type == 'nf4' else fp4_codebook()).sort().values
    pool = torch.cat([cb, (cb[1:] + cb[:-1]) / 2, torch.tensor([0.0, -0.0, 1e-30, -1e-30, 3e4, -3e4, 0.5, 0.25])])
    idx = data.draw(st.lists(st.integers(0, len(pool) - 1), min_size=n, max_size=n))
    scale = data.draw(st.sampled_from([1.0, 1e-3, 7.0]))
    x = pool[torch.tensor(idx)] * scale
    assert_same_as_bnb(x, blocksize, quant_type, dq)

def test_bit_exact_on_an_all_zero_tensor_and_single_blocks():
    for qt in ('nf4', 'fp4'):
        for dq in (False, True):
            assert_same_as_bnb(torch.zeros(100), 64, qt, dq)       # zero full block + zero tail block (absmax 1e-38)
            assert_same_as_bnb(torch.randn(64), 64, qt, dq)        # one block: DQ offset = absmax, nested absmax 0
            assert_same_as_bnb(torch.randn(1), 32, qt, dq)

@pytest.fixture(scope='module')
def smollm2_weights():
    "A few real SmolLM2-135M-Instruct tensors, read straight from the safetensors cache (no model build)."
    from safetensors import safe_open
    from learnft.models import smollm2_path
    names = [f'model.layers.{i}.{m}.weight' for i, m in
             [(0, 'self_attn.q_proj'), (0, 'self_attn.k_proj'), (7, 'self_attn.v_proj'), (14, 'self_attn.o_proj'),
              (21, 'mlp.gate_proj'), (28, 'mlp.up_proj'), (29, 'mlp.down_proj')]]
    with safe_open(str(smollm2_path()/'model.safetensors'), framework='pt') as f:
        return {n: f.get_tensor(n) for n in names} | {'embed[:64]': f.get_tensor('model.embed_tokens.weight')[:64]}

def test_bit_exact_on_real_smollm2_weights(smollm2_weights):
    for i, (name, w) in enumerate(smollm2_weights.items()):
        assert_same_as_bnb(w, 64, 'nf4', True)                 # QLoRA's setting on every tensor
        if i % 3 == 0: assert_same_as_bnb(w, 64, 'fp4', False)  # FP4 on a few

def test_bit_exact_on_real_weights_odd_slices_and_other_blocksizes(smollm2_weights):
    w = smollm2_weights['model.layers.29.mlp.down_proj.weight']
    for bs, cols in [(32, 77), (128, 333), (256, 1), (1024, 575), (4096, 129)]:
        assert_same_as_bnb(w[:101, :cols], bs, 'nf4', True)
        assert_same_as_bnb(w[:101, :cols].to(torch.bfloat16), bs, 'fp4', True)

# ---- the nested 8-bit quantizer (bitsandbytes' CPU look-up table)
@settings(max_examples=25, **SETTINGS)
@given(n=st.integers(1, 5000), blocksize=st.sampled_from([64, 256, 4096]), seed=st.integers(0, 2**31 - 1),
       shift=st.floats(-2, 2))
def test_quantize_blockwise_matches_bitsandbytes(n, blocksize, seed, shift):
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed)) + shift
    q, s = quantize_blockwise(x, blocksize=blocksize)
    bq, bs = F.quantize_blockwise(x, blocksize=blocksize)
    assert same_bits(q, bq) and same_bits(s.absmax, bs.absmax)
    assert same_bits(dequantize_blockwise(q, s), F.dequantize_blockwise(bq, bs))

def test_lookup_table_is_not_exact_nearest_but_matches_bitsandbytes():
    x = torch.linspace(-1, 1, 200_001)
    q, _ = quantize_blockwise(x)
    bq, _ = F.quantize_blockwise(x, blocksize=256)
    exact = nearest_code(x, dynamic_map()).to(torch.uint8)
    assert same_bits(q, bq) and (exact != bq).sum() > 0

# ---- building blocks
@settings(max_examples=50, **SETTINGS)
@given(codes=st.lists(st.integers(0, 15), min_size=1, max_size=300))
def test_pack_unpack_round_trip(codes):
    c = torch.tensor(codes)
    p = pack_4bit(c)
    assert p.dtype == torch.uint8 and p.shape == ((len(codes) + 1) // 2, 1)
    assert unpack_4bit(p, len(codes)).tolist() == codes
    assert (p[0, 0] >> 4).item() == codes[0]  # first element in the high nibble

@settings(max_examples=25, **SETTINGS)
@given(shape=shapes, blocksize=st.sampled_from(VALID_BLOCKSIZES), quant_type=st.sampled_from(QUANT_TYPES), seed=st.integers(0, 2**31 - 1))
def test_round_trip_error_is_bounded_by_half_the_widest_gap(shape, blocksize, quant_type, seed):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    p, s = quantize_4bit(x, blocksize, quant_type)
    err = (dequantize_4bit(p, s) - x).abs().reshape(-1)
    n = x.numel(); nb = s.absmax.numel()
    per_block_absmax = s.absmax.repeat_interleave(blocksize)[:n]
    gap = s.code.sort().values.diff().max()
    assert (err <= per_block_absmax * gap / 2 * (1 + 1e-5) + 1e-7).all() and nb == -(-n // blocksize)

def test_nearest_code_ties_go_down_and_fp4_zero_is_plus_zero():
    cb = nf4_codebook()
    mids = (cb[1:] + cb[:-1]) / 2
    assert nearest_code(mids, cb).tolist() == list(range(15))
    assert nearest_code(torch.tensor([0.0]), fp4_codebook()).item() == 0 and nearest_code(torch.tensor([1e-4]), fp4_codebook()).item() == 8

def test_blockwise_absmax_tail_block_and_zero_blocks():
    x = torch.cat([torch.zeros(64), torch.randn(10)])
    scaled, absmax = blockwise_absmax(x, 64)
    assert absmax[0] == 0 and absmax[1] == x[64:].abs().max() and scaled.abs().max() == 1 and (scaled[:64] == 0).all()

def test_int4_quantizes_like_rounding():
    x = torch.tensor([7.0, -7.0, 3.4, 3.6, -0.4, 0.0] + [0.0] * 58)
    p, s = quantize_4bit(x, 64, 'int4')
    assert dequantize_4bit(p, s)[:6].tolist() == [7.0, -7.0, 3.0, 4.0, -0.0, 0.0]

# ---- the state, converted both ways
def test_quant_state_round_trips_through_bitsandbytes():
    x = torch.randn(33, 70)
    for dq in (False, True):
        p, s = quantize_4bit(x, 64, 'nf4', compress_statistics=dq)
        b = s.to_bnb()
        assert same_bits(F.dequantize_4bit(p, b), dequantize_4bit(p, s))
        assert same_bits(dequantize_4bit(p, QuantState.from_bnb(b)), dequantize_4bit(p, s)) and b.nested == dq

def test_double_quant_alias_and_constant_bytes():
    x = torch.randn(64 * 256 * 2)
    _, s1 = quantize_4bit(x, compress_statistics=True)
    _, s2 = quantize_4bit(x, double_quant=True)
    assert same_bits(s1.absmax, s2.absmax) and s1.nested and s2.nested
    _, s0 = quantize_4bit(x)
    assert s0.constants_nbytes() * 8 / x.numel() == 0.5
    assert s1.constants_nbytes() * 8 / x.numel() == pytest.approx(constant_bits(64, True), abs=1e-3)

# ---- memory arithmetic (numbers.md)
def test_paper_memory_numbers():
    assert constant_bits(64) == 0.5 and round(constant_bits(64, True), 3) == 0.127
    assert round(constant_bits(64) - constant_bits(64, True), 3) == 0.373
    assert bits_per_param('fp32') == 32 and bits_per_param('bf16') == 16 and bits_per_param('int8') == 8
    assert round(model_memory(65e9, 'bf16')['GB']) == 130
    n_quant, n_kept = 106_168_320, 28_346_688  # SmolLM2-135M: linear layers vs embeddings + norms
    assert round(model_memory(n_quant + n_kept, 'fp32')['MiB']) == 513
    assert round(model_memory(n_quant, 'nf4', compress_statistics=True, n_kept=n_kept, constants=False)['MiB']) == 159

def test_lloyd_max_floor():
    lm = lloyd_max_normal(16)
    assert abs(lm['mse'] - 0.009501) < 1e-6
    assert abs(codebook_mse_normal(lm['levels'], 1.0) - lm['mse']) < 1e-9
    assert codebook_mse_normal(nf4_codebook(), 2.86) < 1.05 * lm['mse']

# ---- bad input: clear errors naming the option and the allowed values
@pytest.mark.parametrize('kwargs,words', [
    (dict(blocksize=100), ['blocksize=100', '4096']),
    (dict(blocksize=16), ['blocksize=16', '32']),
    (dict(quant_type='NF4'), ["quant_type='NF4'", "'nf4'", "'fp4'"]),
    (dict(quant_type='int8'), ["quant_type='int8'", "'int4'"]),
])
def test_bad_options(kwargs, words):
    with pytest.raises(ValueError) as e: quantize_4bit(torch.randn(64), **kwargs)
    assert all(w in str(e.value) for w in words), str(e.value)

@pytest.mark.parametrize('x,words', [
    (torch.arange(64), ['x.dtype=torch.int64', 'torch.float32']),
    (torch.randn(64, dtype=torch.float64), ['x.dtype=torch.float64']),
    (torch.zeros(64, dtype=torch.uint8), ['x.dtype=torch.uint8']),
    (torch.tensor([0.0, 1.0, float('inf')]), ['1 non-finite', 'index 2']),
    (torch.tensor([float('nan')] * 3), ['3 non-finite', 'index 0']),
    (torch.zeros(0), ['empty']),
])
def test_bad_tensors(x, words):
    with pytest.raises(ValueError) as e: quantize_4bit(x)
    assert all(w in str(e.value) for w in words), str(e.value)

def test_mismatched_state():
    p, s = quantize_4bit(torch.randn(10, 64))
    p2, s2 = quantize_4bit(torch.randn(10, 65))
    with pytest.raises(ValueError, match='do not belong together'): dequantize_4bit(p, s2)
    with pytest.raises(ValueError, match='packed.dtype'): dequantize_4bit(p.to(torch.int8), s)
    with pytest.raises(TypeError, match='from_bnb'): dequantize_4bit(p, s.to_bnb())
    bad = QuantState(absmax=s.absmax[:-1], shape=s.shape, code=s.code, blocksize=64, quant_type='nf4')
    with pytest.raises(ValueError, match='mismatched state'): dequantize_4bit(p, bad)

def test_invalid_calculator_dtype():
    with pytest.raises(ValueError, match="dtype='fp8'"): bits_per_param('fp8')
    with pytest.raises(ValueError, match='blocksize=65'): model_memory(1e9, 'nf4', blocksize=65)

# ---- bitsandbytes' CPU kernels differ by processor: every claim checked on the path this CPU takes, and the others where possible
PROBE = [(80, 96), (96, 80), (7, 96), (80, 32), (2, 96), (1, 96), (96,), (1000,), (128, 64), (576, 576), (3, 4, 96), (4096, 3), (333, 129)]

def _repro():
    "tools/bnb_cpu_dequant_repro.py (standalone: torch + bitsandbytes only), imported for its direct calls into the kernels."
    import importlib.util
    spec = importlib.util.spec_from_file_location('bnb_cpu_dequant_repro', Path(__file__).parents[1]/'tools'/'bnb_cpu_dequant_repro.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m

@pytest.mark.parametrize('blocksize', [64, 128])
@pytest.mark.parametrize('quant_type,dq,dtype', [('nf4', False, torch.float32), ('nf4', True, torch.bfloat16), ('fp4', False, torch.float16)])
def test_dequantize_exact_and_bnb_on_the_path_this_cpu_takes(blocksize, quant_type, dq, dtype):
    "learnft = the exact dequantization on every shape; bitsandbytes = exact wherever its kernel is not suspect here, and where it is "
    "suspect either exact (once fixed upstream) or wrong value for value as its AVX512 indexing predicts -- no tolerance."
    for i, shape in enumerate(PROBE):
        x = (torch.randn(shape, generator=torch.Generator().manual_seed(i)) * 0.05).to(dtype)
        r = compare_with_bnb_dequant(x, blocksize, quant_type, dq)
        assert r['ours_exact'], r
        assert r['bnb_exact'] if not r['suspect'] else (r['bnb_exact'] or r['bnb_as_avx512']), r

@pytest.mark.parametrize('quant_type', ['nf4', 'fp4'])
def test_each_bnb_cpu_kernel_called_directly(quant_type):
    "Both of bitsandbytes' CPU kernels, whichever one its dispatcher picks here: its torch kernel (what CPUs without AVX512 run) is "
    "exact on every CPU; its compiled kernel, called as the AVX512 dispatcher calls it, is exact wherever its indexing is right, "
    "and elsewhere exact (this CPU runs its scalar code) or exactly as the AVX512 indexing predicts."
    m = _repro()
    for i, shape in enumerate(PROBE):
        for bs in (64, 128):
            x = torch.randn(shape, generator=torch.Generator().manual_seed(i)) * 0.05
            q, s = F.quantize_4bit(x, blocksize=bs, quant_type=quant_type)
            st = QuantState.from_bnb(s)
            exact = dequantize_4bit_reference(q, st)
            assert same_bits(m.torch_dequantize(q, s.absmax, quant_type, bs, shape, torch.float32).reshape(shape), exact)
            native = m.native_dequantize(q, s.absmax, quant_type, bs, shape, torch.float32)
            if native is None: continue                                  # odd last dimension: bitsandbytes never calls it
            as_avx512 = dequantize_4bit_reference(q, st, bnb_avx512_absmax_index(shape, bs))
            ok = same_bits(native + 0.0, exact) or (bnb_dequant_suspect(shape, bs, kernel='native') and same_bits(native + 0.0, as_avx512))
            assert ok, (shape, bs)

def test_avx512_indexing_and_its_closed_form():
    "Machine-independent: bnb_dequant_suspect(kernel='native') is exactly 'bnb_avx512_absmax_index differs from the right block somewhere'."
    for bs in (32, 64, 128, 256):
        for rows in (1, 2, 3, 5):
            for cols in range(2, 300, 2):
                differs = not torch.equal(bnb_avx512_absmax_index((rows, cols), bs), torch.arange(rows * cols) // bs)
                assert differs == bnb_dequant_suspect((rows, cols), bs, kernel='native'), (rows, cols, bs)
    assert bnb_dequant_suspect((4, 6, 96), 64, kernel='native') and not bnb_dequant_suspect((96,), 64, kernel='native')
    assert not bnb_dequant_suspect((80, 96), 64, kernel='torch')

def test_cpu_features_are_read_from_this_cpu():
    f = cpu_features()
    flags = open('/proc/cpuinfo').read().split() if Path('/proc/cpuinfo').exists() else []
    assert f['avx512_bf16'] == ('avx512_bf16' in flags) and f['amx_bf16'] == ('amx_bf16' in flags)
    assert f['torch_capability'] == torch.backends.cpu.get_cpu_capability()
    assert bnb_dequant_suspect((80, 96), 64) == (f['torch_capability'] == 'AVX512')      # what bitsandbytes 0.50 registers by
    assert not bnb_dequant_suspect((1, 96), 64) and not bnb_dequant_suspect((80, 128), 64) and not bnb_dequant_suspect((80, 94), 64)

# ---- bitsandbytes' own compiled fallback (odd last dimension), as it runs by default
@pytest.mark.slow
def test_bit_exact_against_compiled_fallback():
    torch._dynamo.config.disable = False
    for shape, bs in [((5, 33), 64), ((129,), 128)]:
        assert_same_as_bnb(torch.randn(shape), bs, 'nf4', True)
