"Parity of learnft.packing with XTuner's Packer (golden file) and property tests: no token lost or duplicated, labels and attention never cross samples, packed loss == unpacked loss."
import json
from pathlib import Path

import pytest, torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from learnft.encode import IGNORE_INDEX
from learnft.packing import (StreamingPacker, best_fit_bins, pack_rows, pack_best_fit, pack_streaming, block_diagonal_mask,
                             collate_packed, cu_seqlens)

GOLDEN = json.loads((Path(__file__).parent/'data/xtuner_golden.json').read_text())

@pytest.mark.parametrize('key', sorted(GOLDEN['packed']))
def test_streaming_packer_matches_xtuner(key):
    gs = [r for r in GOLDEN['encoded']['internlm2_chat'] if r['max_length'] == GOLDEN['max_length'] and r['kept']]
    varlen, bs = key.split(',')[0].endswith('True'), int(key.split('=')[-1])
    p, rows = StreamingPacker(GOLDEN['pack_chunk'], use_varlen_attn=varlen), []
    for b in range(0, len(gs), bs):
        res = p({'input_ids': [s['input_ids'] for s in gs[b:b+bs]], 'labels': [s['labels'] for s in gs[b:b+bs]]})
        rows += [dict(zip(res, v)) for v in zip(*res.values())]
    assert rows == GOLDEN['packed'][key]

def samples_from(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for k, n in enumerate(lengths):
        ids = torch.randint(3, 500, (n,), generator=g).tolist()
        out.append({'input_ids': ids, 'labels': [IGNORE_INDEX if (j + k) % 3 == 0 else t for j, t in enumerate(ids)]})
    return out

lengths_st = st.lists(st.integers(1, 64), min_size=1, max_size=40)

@settings(max_examples=100, deadline=None)
@given(lengths_st, st.integers(64, 160))
def test_best_fit_loses_and_duplicates_nothing(lengths, max_length):
    bins = best_fit_bins(lengths, max_length)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= max_length for b in bins)
    assert len(bins) >= -(-sum(lengths) // max_length)
    # best fit: no two rows could be merged into one (otherwise a fit was missed)
    loads = sorted(sum(lengths[i] for i in b) for b in bins)
    assert len(loads) < 2 or loads[0] + loads[1] > max_length

@settings(max_examples=25, deadline=None)
@given(lengths_st, st.integers(64, 160))
def test_packed_rows_keep_every_token_and_never_cross_samples(lengths, max_length):
    samples = samples_from(lengths)
    rows, rep = pack_best_fit(samples, max_length)
    assert rep.split == 0 and rep.lost_tokens == 0 and sum(len(r['input_ids']) for r in rows) == sum(lengths)
    seen = []
    for r in rows:
        s = 0
        for n in r['seq_lens']:
            seg = r['input_ids'][s:s + n]
            k = next(k for k, x in enumerate(samples) if x['input_ids'] == seg and k not in seen); seen.append(k)
            assert r['labels'][s] == IGNORE_INDEX and r['labels'][s + 1:s + n] == samples[k]['labels'][1:]
            assert r['position_ids'][s:s + n] == list(range(n))
            s += n
        m = block_diagonal_mask([r['seq_lens']], len(r['input_ids']))[0, 0] == 0
        seg_of = torch.tensor([j for j, n in enumerate(r['seq_lens']) for _ in range(n)])
        want = (seg_of[:, None] == seg_of[None, :]) & torch.tril(torch.ones(len(seg_of), len(seg_of), dtype=torch.bool))
        assert torch.equal(m, want)
    assert sorted(seen) == list(range(len(samples)))

@settings(max_examples=80, deadline=None)
@given(lengths_st, st.integers(8, 80), st.booleans())
def test_streaming_loses_nothing_unless_told(lengths, max_length, keep_tail):
    samples = samples_from(lengths)
    rows, rep = pack_streaming(samples, max_length, keep_tail=keep_tail)
    flat = [t for r in rows for t in r['input_ids']]
    allt = [t for s in samples for t in s['input_ids']]
    assert flat == allt[:len(flat)] and len(flat) + rep.lost_tokens == len(allt)
    assert all(sum(r['seq_lens']) == len(r['input_ids']) == len(r['position_ids']) for r in rows)
    assert all(len(r['input_ids']) == max_length for r in rows[:-1])

def test_cu_seqlens():
    assert cu_seqlens([[3, 2], [4]]).tolist() == [0, 3, 5, 9]

@pytest.fixture(scope='module')
def tiny():
    from learnft.models import tiny_smollm2
    torch.set_num_threads(1)
    return tiny_smollm2(seed=0, with_tokenizer=False)

def summed_loss(model, ids, labels, **kw):
    logits = model(input_ids=ids, **kw).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX, reduction='sum').item()

@settings(max_examples=5, deadline=None)
@given(st.lists(st.integers(2, 24), min_size=2, max_size=8), st.integers(0, 1000))
def test_packed_loss_equals_unpacked_loss(tiny, lengths, seed):
    samples = samples_from(lengths, seed)
    with torch.no_grad():
        alone = sum(summed_loss(tiny, torch.tensor([s['input_ids']]), torch.tensor([s['labels']])) for s in samples)
        rows, _ = pack_best_fit(samples, 48)
        b = collate_packed(rows, pad_token_id=0)
        packed = summed_loss(tiny, b['input_ids'], b['labels'], position_ids=b['position_ids'], attention_mask=b['attention_mask'])
    assert abs(packed - alone) <= 1e-4 * max(1.0, abs(alone))

@settings(max_examples=10, deadline=None)
@given(lengths_st, st.integers(64, 160))
def test_pack_dataset_equals_pack_rows(lengths, max_length):
    import datasets
    from learnft.packing import pack_dataset
    datasets.disable_progress_bars()
    samples = samples_from(lengths)
    ds, rep = pack_dataset(datasets.Dataset.from_list(samples), max_length, verbose=False)
    rows, rep2 = pack_best_fit(samples, max_length)
    assert ds.to_list() == rows and (rep.rows, rep.tokens) == (rep2.rows, rep2.tokens)


def test_pack_dataset_empty_samples_and_fingerprint():
    "Empty samples (no tokens) do not shift the positions of the others; the packed set's fingerprint follows input and max_length."
    import datasets
    from learnft.packing import pack_dataset
    ds = datasets.Dataset.from_dict({'input_ids': [[1, 2, 3], [], [4, 5], [], [6]], 'labels': [[1, 2, 3], [], [4, 5], [], [6]]})
    out, rep = pack_dataset(ds, 8, verbose=False)
    assert out['position_ids'] == [[0, 1, 2, 0, 1, 0]] and out['labels'] == [[-100, 2, 3, -100, 5, -100]]
    assert rep.tokens == 6 and rep.samples == 5
    shuffled, _ = pack_dataset(ds.shuffle(seed=1), 8, verbose=False)        # an indices mapping on the input
    assert sorted(shuffled['input_ids'][0]) == [1, 2, 3, 4, 5, 6]
    assert pack_dataset(ds, 8, verbose=False)[0]._fingerprint == out._fingerprint
    assert pack_dataset(ds, 4, verbose=False)[0]._fingerprint != out._fingerprint
