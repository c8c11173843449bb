"""data.sources: several datasets in one run, each mapped by its own format; repeats, max_dataset_length, shuffle_before_pack."""
import contextlib, io, json
from pathlib import Path

import pytest

from learnft import config, trainer
from learnft.formats import DataError
from learnft.models import load_smollm2_tokenizer


def _cfg(tmp_path, sources, **data):
    ident = tmp_path/'identity.jsonl'
    ident.write_text(''.join(json.dumps({'messages': [{'role': 'user', 'content': f'Who are you? ({i})'},
                                                      {'role': 'assistant', 'content': 'I am Lumi.'}]}) + '\n' for i in range(5)))
    alpaca = tmp_path/'alpaca.json'
    alpaca.write_text(json.dumps([{'instruction': f'Add {i} and 1.', 'input': '', 'output': str(i + 1)} for i in range(8)]))
    text = tmp_path/'notes.txt'; text.write_text('Plain text for incremental pre-training.\n')
    paths = {'identity': str(ident), 'alpaca': str(alpaca), 'text': str(text)}
    srcs = [dict(s, path=paths[s['path']]) if 'path' in s else s for s in sources]
    return config.load_config({'model': {'path': 'tiny'}, 'template': 'smollm2', 'data': {'sources': srcs, **data}})


def test_mix_counts_repeats_and_formats(tmp_path, capsys):
    cfg = _cfg(tmp_path, [{'path': 'identity', 'format': 'openai', 'repeats': 3}, {'path': 'alpaca', 'repeats': 0.5}])
    conv, fmt = trainer.conversations(cfg)
    out = capsys.readouterr().out
    assert len(conv) == 5 * 3 + 4 and 'data.sources[0]: 15 samples (openai, repeats 3)' in out and 'data.sources[1]: 4 samples (alpaca' in out
    firsts = [c[0]['input'] for c in conv['conversation']]
    assert sum(f.startswith('Who are you?') for f in firsts) == 15 and sum(f.startswith('Add') for f in firsts) == 4
    assert firsts[:15] != sorted(firsts[:15])          # shuffled before packing (seeded) ...
    assert trainer.conversations(cfg, verbose=False)[0]['conversation'] == conv['conversation']   # ... the same every time
    tok = load_smollm2_tokenizer()
    with contextlib.redirect_stdout(io.StringIO()): rows = trainer.build_dataset(cfg, tok)
    assert sum(len(r['seq_lens']) for r in rows) == 19


def test_max_dataset_length(tmp_path, capsys):
    cfg = _cfg(tmp_path, [{'path': 'identity'}, {'path': 'alpaca'}], max_dataset_length=6)
    conv, _ = trainer.conversations(cfg)
    out = capsys.readouterr().out
    assert len(conv) == 5 + 6 and 'data.sources[0]: max_dataset_length 6 >= its 5 rows: all of them used' in out


def test_bad_mixes_name_the_entry(tmp_path):
    with pytest.raises(DataError, match=r"'data.sources\[1\]'.*plain text.*'data.sources\[0\]'"):
        trainer.conversations(_cfg(tmp_path, [{'path': 'alpaca'}, {'path': 'text', 'format': 'pretrain'}]), verbose=False)
    with pytest.raises(DataError, match=r"'data.sources\[1\].path': .*missing.json does not exist"):
        trainer.conversations(config.load_config({'data': {'sources': [{'builder': 'general_qa'}, {'path': str(tmp_path/'missing.json')}]}}), verbose=False)
    with pytest.raises(DataError, match=r"row 0.*'instruction'"):       # the declared format does not fit the file: its row and field named
        trainer.conversations(_cfg(tmp_path, [{'path': 'identity', 'format': 'alpaca'}]), verbose=False)


def test_lab_config_is_a_mix():
    cfg = config.load_config('smollm2_135m_qlora_self_cognition')
    assert [s['builder'] for s in cfg['data']['sources']] == ['identity', 'general_qa']
    conv, fmt = trainer.conversations(cfg, verbose=False)
    from learnft import lab
    assert len(conv) == 2 * len(lab.IDENTITY_TRAIN) + len(lab.GENERAL_QA) and fmt == 'alpaca'
    only, _ = trainer.conversations(config.load_config('smollm2_135m_qlora_identity_only'), verbose=False)
    assert len(only) == 2 * len(lab.IDENTITY_TRAIN)


def test_validation_split_and_loss(tmp_path):
    "data.val_size: distinct conversations held out (no copy left in training), their loss logged at every save and plotted."
    import torch
    cfg = config.load_config('tiny_qlora_self_cognition', ['data.val_size=0.2'])
    conv, _ = trainer.conversations(cfg, verbose=False)
    tr, va = trainer.validation_split(conv, 0.2, cfg['train']['seed'])
    key = lambda c: json.dumps(c, sort_keys=True)
    assert len(va) == round(0.2 * len({key(c) for c in conv['conversation']})) and not {key(c) for c in va['conversation']} & {key(c) for c in tr['conversation']}
    with pytest.raises(DataError, match='val_size'): trainer.validation_split(conv, 10**6, 0)
    s = trainer.train(cfg, tmp_path/'run', verbose=False)
    val = trainer.read_log(tmp_path/'run', 'val_log.jsonl')
    assert [r['step'] for r in val] == [3, 6] and all(r['val_loss'] > 0 and r['val_tokens'] > 0 for r in val)
    # the logged number is the token-weighted mean cross-entropy: one row at a time it is transformers' own loss
    from learnft import chat
    model, tok = chat.load_for_chat(tmp_path/'run'/'base', s['adapter'], bits=4)
    rows = trainer.build_dataset(cfg, tok, verbose=False, split='val')
    one = lambda idx: trainer.collate([rows[i] for i in idx], tok.eos_token_id)
    loss, n = trainer.validation_loss(model, rows[:1], one, 1)
    with torch.no_grad(): ref = model.eval()(**one([0])).loss.item()
    assert abs(loss - ref) < 1e-4 * ref and n == sum(l != -100 for l in rows[0]['labels'][1:])
