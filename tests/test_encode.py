"Parity of learnft.encode with XTuner's encode_fn (golden file from tools/xtuner_golden.py) and property tests of the masks."
import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from learnft.encode import IGNORE_INDEX, encode, encode_chat, encode_conversations, show_masked
from learnft.formats import MAP_FNS, make_turn, template_map
from learnft.models import load_smollm2_tokenizer

GOLDEN = json.loads((Path(__file__).parent/'data/xtuner_golden.json').read_text())
TOK = load_smollm2_tokenizer()

@pytest.mark.parametrize('name', sorted(GOLDEN['encoded']))
def test_encode_matches_xtuner_encode_fn(name):
    n = 0
    for rec in GOLDEN['encoded'][name]:
        if 'error' in rec: continue
        fmt = GOLDEN['rows'][rec['row']]['format']
        for tpl in (GOLDEN['templates'][name], name):      # XTuner's dict, and the registry entry
            ex = MAP_FNS[fmt](GOLDEN['rows'][rec['row']]['row'])
            if fmt != 'pretrain': ex = template_map(ex, tpl)
            assert encode(ex, TOK, rec['max_length']) == {'input_ids': rec['input_ids'], 'labels': rec['labels']}, (name, rec['row'])
        n += 1
    assert n >= 12

def test_kept_flag_matches_xtuner_drop_rule():
    for recs in GOLDEN['encoded'].values():
        for rec in recs:
            if 'error' not in rec: assert rec['kept'] == any(l != IGNORE_INDEX for l in rec['labels'])

words = st.text(st.characters(whitelist_categories=('Lu', 'Ll', 'Nd', 'Lo'), whitelist_characters=' .,?!\n'),
                min_size=1, max_size=24).filter(lambda s: s.strip())
convs = st.lists(st.tuples(words, words, st.booleans()), min_size=1, max_size=4)

@settings(max_examples=30, deadline=None)
@given(convs, st.sampled_from(['internlm2_chat', 'default', 'llama3_chat', 'gemma', 'mistral', 'qwen_chat']),
       st.sampled_from(['all', 'last']))
def test_xtuner_path_trains_exactly_the_outputs(turns, name, which):
    conv = template_map({'conversation': [make_turn(u, a, output_with_loss=l) for u, a, l in turns]}, GOLDEN['templates'][name])
    e = encode(conv, TOK, 10**6, turns=which)
    eos = TOK.eos_token
    want = ''.join(t['output'] + (eos if t['need_eos_token'] else '') for i, t in enumerate(conv['conversation'])
                   if t['output_with_loss'] and (which == 'all' or i == len(turns) - 1))
    assert TOK.decode([l for l in e['labels'] if l != IGNORE_INDEX]) == want
    assert all(l in (IGNORE_INDEX, i) for i, l in zip(e['input_ids'], e['labels']))
    short = encode(conv, TOK, 7, turns=which)
    assert short == {'input_ids': e['input_ids'][:7], 'labels': e['labels'][:7]}

@settings(max_examples=30, deadline=None)
@given(convs, st.one_of(st.none(), words), st.sampled_from(['all', 'last']))
def test_chat_template_masks(turns, system, which):
    msgs = [{'role': 'system', 'content': system}] if system else []
    for u, a, l in turns: msgs += [{'role': 'user', 'content': u}, {'role': 'assistant', 'content': a, 'loss': l}]
    e = encode_chat(msgs, TOK, 10**6, turns=which)
    rendered = TOK.apply_chat_template(msgs, tokenize=False)
    assert TOK.decode(e['input_ids']) == rendered                       # decoding input_ids gives the rendered text
    # labels are -100 exactly outside the trained answers: trained text == answers + <|im_end|>, in order
    want = ''.join(a + '<|im_end|>' for k, (u, a, l) in enumerate(turns) if l and (which == 'all' or k == len(turns) - 1))
    runs, cur = [], []
    for i, l in zip(e['input_ids'], e['labels']):
        if l != IGNORE_INDEX: assert l == i; cur.append(i)
        elif cur: runs.append(TOK.decode(cur)); cur = []
    if cur: runs.append(TOK.decode(cur))
    assert ''.join(runs) == want
    assert all(r.endswith('<|im_end|>') for r in runs)

def test_chat_path_equals_xtuner_path_for_chatml():
    msgs = [{'role': 'system', 'content': 'S'}, {'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello'},
            {'role': 'user', 'content': 'Q2'}, {'role': 'assistant', 'content': 'A2', 'loss': False}]
    conv = MAP_FNS['openai']({'messages': msgs})
    x = encode(template_map(conv, 'internlm2_chat'), TOK, 512)
    c = encode_chat(msgs, TOK, 512)
    assert x['input_ids'][0] == TOK.bos_token_id and (x['input_ids'][1:], x['labels'][1:]) == (c['input_ids'], c['labels'])

def test_any_tokenizer_template():
    "A template that is not ChatML (text role markers, <|endoftext|> as end of turn) still gives answer-only masks."
    import copy
    tok = copy.copy(TOK)
    tok.chat_template = ("{% for m in messages %}{{ '[' + m['role'] + ']: ' + m['content'] + '<|endoftext|>\n' }}{% endfor %}"
                         "{% if add_generation_prompt %}{{ '[assistant]: ' }}{% endif %}")
    msgs = [{'role': 'user', 'content': 'Ping'}, {'role': 'assistant', 'content': 'Pong'}]
    e = encode_chat(msgs, tok, 512)
    assert tok.decode([l for l in e['labels'] if l != IGNORE_INDEX]).strip() == 'Pong<|endoftext|>'   # ' P' straddles the span start
    assert 'Ping' not in show_masked(e['input_ids'], e['labels'], tok).split('⟦', 1)[1]
