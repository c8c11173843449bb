"Parity of learnft.formats with the real XTuner (golden file from tools/xtuner_golden.py), bad-input errors, property tests."
import json, os
from collections import Counter
from pathlib import Path

import datasets, pytest
from hypothesis import given, settings, strategies as st

from learnft.formats import (DataError, DropRow, MAP_FNS, TURN_DEFAULTS, alpaca_map, openai_map, sharegpt_map,
                             oasst_map, load_rows, to_conversations, template_map, detect_format)

datasets.disable_progress_bars()
GOLDEN = json.loads((Path(__file__).parent/'data/xtuner_golden.json').read_text())
XT_DEFAULTS = dict(SUFFIX='', SUFFIX_AS_EOS=False, SEP='', STOP_WORDS=[])

def same_turns(ours, theirs):
    return len(ours) == len(theirs) and all(all(o[k] == t[k] for k in t) for o, t in zip(ours, theirs))

def test_map_fns_match_xtuner():
    for item, want in zip(GOLDEN['rows'], GOLDEN['mapped']):
        try: got = MAP_FNS[item['format']](item['row'])['conversation']
        except DropRow: got = []
        assert same_turns(got, want['conversation']), item

@pytest.mark.parametrize('name', sorted(GOLDEN['templates']))
def test_template_map_matches_xtuner(name):
    tpl = GOLDEN['templates'][name]
    for rec in GOLDEN['encoded'][name]:
        if GOLDEN['rows'][rec['row']]['format'] == 'pretrain' or rec.get('max_length') == GOLDEN['short_max_length']: continue
        conv = GOLDEN['mapped'][rec['row']]
        if 'error' in rec:
            with pytest.raises(DataError, match=r'conversation\[0\]'): template_map(conv, tpl)
            continue
        for t in (tpl, name):   # the plain XTuner dict, and lesson 01's registry entry of the same name
            assert same_turns(template_map(conv, t)['conversation'], rec['templated']['conversation']), (name, rec['row'], t)

def test_registry_templates_equal_xtuner_dicts():
    from learnft.templates import get_template
    for name, d in GOLDEN['templates'].items():
        assert {**XT_DEFAULTS, **d} == {**XT_DEFAULTS, **get_template(name).as_xtuner()}, name

def test_template_map_leaves_input_alone():
    ex = {'conversation': [dict(TURN_DEFAULTS, input='Hi', output='Yo')]}
    before = json.dumps(ex)
    template_map(ex, GOLDEN['templates']['internlm2_chat'])
    assert json.dumps(ex) == before

@pytest.mark.parametrize('row, fn, needle', [
    ({'instruction': 'a'}, alpaca_map, "no field 'output'"),
    ({'instruction': 'a', 'output': 5}, alpaca_map, "'output' should be str"),
    ({'messages': 'hi'}, openai_map, "'messages' should be list"),
    ({'messages': [{'role': 'user', 'content': 'a'}, {'role': 'assistant', 'content': 'b', 'loss': 'maybe'}]}, openai_map, "'loss'"),
    ({'messages': [{'role': 'user', 'content': 'a'}, {'role': 'tool', 'content': 'b'}]}, openai_map, "'tool'"),
    ({'messages': [{'role': 'user', 'contnt': 'a'}]}, openai_map, "no field 'content'"),
    ({'conversations': [{'from': 'robot', 'value': 'x'}]}, sharegpt_map, "'robot'"),
    ({'text': 7}, oasst_map, "'text' should be str"),
])
def test_bad_rows_name_row_and_field(row, fn, needle):
    with pytest.raises(DataError) as e: fn(row, 41)
    assert 'row 41' in str(e.value) and needle in str(e.value)

@pytest.mark.parametrize('row, fn, reason', [
    ({'instruction': 'a', 'input': '', 'output': '<nooutput>'}, alpaca_map, 'nooutput'),
    ({'instruction': 'a', 'input': '', 'output': ' '}, alpaca_map, 'empty output'),
    ({'messages': [{'role': 'user', 'content': 'a'}]}, openai_map, 'no assistant turn'),
    ({'messages': [{'role': 'assistant', 'content': 'first'}]}, openai_map, 'no assistant turn'),
    ({'text': '### Human: unanswered'}, oasst_map, 'no ### Human'),
])
def test_useless_rows_are_dropped_with_reason(row, fn, reason):
    with pytest.raises(DropRow, match=reason): fn(row, 0)

def test_load_and_report(tmp_path):
    rows = [{'messages': [{'role': 'assistant', 'content': 'hello first'}, {'role': 'user', 'content': 'q'},
                          {'role': 'assistant', 'content': 'a'}, {'role': 'user', 'content': 'dangling'}]},
            {'messages': [{'role': 'user', 'content': 'q'}]},
            {'messages': [{'role': 'user', 'content': 'q'}, {'role': 'assistant', 'content': 'a', 'loss': False}]}]
    (tmp_path/'d.jsonl').write_text('\n'.join(json.dumps(r) for r in rows))
    (tmp_path/'d.json').write_text(json.dumps(rows))
    for f in ('d.jsonl', 'd.json'):
        ds, rep = to_conversations(load_rows(tmp_path/f), verbose=False)
        assert (rep.total, rep.kept) == (3, 2) and rep.dropped == Counter({'no assistant turn': 1})
        assert rep.notes == Counter({'leading assistant message skipped': 1, 'trailing user message without answer ignored': 1})
        assert ds['row'] == [0, 2] and ds[1]['conversation'][0]['output_with_loss'] is False
    (tmp_path/'x.parquetx').write_text('')
    with pytest.raises(DataError, match='unsupported file type'): load_rows(tmp_path/'x.parquetx')

def test_txt_folder_is_pretrain(tmp_path):
    (tmp_path/'a.txt').write_text('  one  '); (tmp_path/'b.txt').write_text('')
    ds, rep = to_conversations(load_rows(tmp_path), verbose=False)
    assert detect_format({'text': 'x'}) == 'pretrain' and rep.kept == 1 and rep.dropped == Counter({'empty text': 1})
    assert ds[0]['conversation'][0]['output'] == 'one' and ds[0]['conversation'][0]['need_eos_token'] is False

text = st.text(st.characters(blacklist_categories=('Cs',)), min_size=1, max_size=20).filter(lambda s: s.strip() and s == s.strip())

@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(text, text, st.booleans()), min_size=1, max_size=5), st.one_of(st.none(), text))
def test_openai_roundtrip(turns, system):
    msgs = ([{'role': 'system', 'content': system}] if system else [])
    for u, a, loss in turns: msgs += [{'role': 'user', 'content': u}, {'role': 'assistant', 'content': a, 'loss': loss}]
    conv = openai_map({'messages': msgs})['conversation']
    assert [(t['input'], t['output'], t['output_with_loss']) for t in conv] == turns
    assert conv[0]['system'] == (system or '') and all(t['system'] == '' for t in conv[1:])
    sg = sharegpt_map({'conversations': [{'from': {'user': 'human', 'assistant': 'gpt', 'system': 'system'}[m['role']],
                                          'value': m['content'], 'loss': m.get('loss')} for m in msgs]})['conversation']
    assert sg == conv
