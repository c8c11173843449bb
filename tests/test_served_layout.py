"""Train what is served: for every shipped config, the training rows are the layout that `learnft chat`, the lab's
`generate` and plain transformers build at inference from the tokenizer that ships with the adapter."""
import copy, io, contextlib, subprocess, sys
from pathlib import Path

import pytest
import torch

from learnft import chat, config, trainer
from learnft.encode import IGNORE_INDEX, conversation_messages
from learnft.models import load_smollm2_tokenizer

TEMPLATED = [n for n in config.CONFIGS if config.CONFIGS[n]['data'].get('format') != 'pretrain']


@pytest.fixture(scope='module')
def tok():
    return load_smollm2_tokenizer()


def _rows_and_messages(name, tok):
    "One unpacked training row per conversation (nothing dropped), with the conversation as messages, and the shipped tokenizer."
    cfg = config.load_config(name, ['data.pack_to_max_length=false', 'data.max_length=4096'])
    t = copy.deepcopy(tok)
    with contextlib.redirect_stdout(io.StringIO()): rows = trainer.build_dataset(cfg, t, verbose=False)
    conv, _ = trainer.conversations(cfg, verbose=False)          # the same conversations, in the same order (no packing)
    msgs = [conversation_messages(c) for c in conv['conversation']]
    assert len(rows) == len(msgs)
    return cfg, rows, msgs, t


@pytest.mark.parametrize('name', TEMPLATED)
def test_training_rows_are_the_served_layout(name, tok, tmp_path):
    cfg, rows, msgs, t = _rows_and_messages(name, tok)
    assert t.chat_template == trainer.served_chat_template(cfg, tok)   # the tokenizer that ships carries the trained layout
    t.save_pretrained(tmp_path)                                        # ... and keeps it through a save, as adapters and merges do
    from transformers import AutoTokenizer
    shipped = AutoTokenizer.from_pretrained(tmp_path)
    assert shipped.chat_template == t.chat_template
    checked = 0
    for row, m in list(zip(rows, msgs))[:40]:
        plain = [{k: v for k, v in x.items() if k != 'loss'} for x in m]
        assert row['input_ids'] == shipped.apply_chat_template(plain, tokenize=True, return_dict=True)['input_ids']
        for k, x in enumerate(m):
            if x['role'] != 'assistant': continue
            hf = shipped.apply_chat_template(plain[:k], add_generation_prompt=True, tokenize=True, return_dict=True)['input_ids']
            _, ours, _ = chat.prompt_ids(shipped, plain[:k])                  # learnft chat, lab.generate, eval prompts
            assert ours == hf and row['input_ids'][:len(hf)] == hf, (name, k)
            rest = [(i, l) for i, l in zip(row['input_ids'][len(hf):], row['labels'][len(hf):])]
            answer = shipped(x['content'].strip() + '<|im_end|>', add_special_tokens=False)['input_ids']
            got = [i for i, l in rest[:len(answer)] if l != IGNORE_INDEX]
            assert got == (answer if x['loss'] else []), (name, k, shipped.decode(answer))
            assert all(l == IGNORE_INDEX for _, l in rest[len(answer):len(answer) + 1])   # the newline after <|im_end|> is not trained
            checked += 1
    assert checked >= 20 or checked == sum(x['role'] == 'assistant' for m in msgs for x in m), checked
    assert all(l == IGNORE_INDEX for r in rows for l in r['labels'][:3])       # a row never starts trained


def test_shipped_lab_layout_has_no_base_identity(tok):
    cfg = config.load_config('smollm2_135m_qlora_self_cognition')
    served = tok.apply_chat_template([{'role': 'user', 'content': 'Hi'}], chat_template=trainer.served_chat_template(cfg, tok),
                                     tokenize=False, add_generation_prompt=True)
    # the lab trains and ships its own default system prompt: the base's kind of prompt, naming the new identity, never the base's
    assert served == f"<|im_start|>system\n{cfg['system']}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert 'Lumi' in cfg['system'] and not any(w in served for w in ('SmolLM', 'Hugging Face'))
    bare = config.load_config('smollm2_135m_qlora_self_cognition', ['system=null'])
    assert tok.apply_chat_template([{'role': 'user', 'content': 'Hi'}], chat_template=trainer.served_chat_template(bare, tok),
                                   tokenize=False, add_generation_prompt=True) == '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n'
    system = config.load_config('smollm2_135m_qlora_self_cognition', ['system=You are Lumi.'])
    assert tok.apply_chat_template([{'role': 'user', 'content': 'Hi'}], chat_template=trainer.served_chat_template(system, tok),
                                   tokenize=False).startswith('<|im_start|>system\nYou are Lumi.<|im_end|>\n')


def test_xtuner_layout_by_name_ships_its_own_program(tok):
    "template_style: xtuner trains XTuner's encode_fn layout (doubled <|im_start|>, the Alpaca newline) and ships a program that renders it."
    cfg, rows, msgs, t = _rows_and_messages('tiny_qlora_self_cognition', tok)
    xcfg = config.load_config('tiny_qlora_self_cognition', ['template_style=xtuner', 'data.pack_to_max_length=false', 'data.max_length=4096'])
    xt = copy.deepcopy(tok)
    with contextlib.redirect_stdout(io.StringIO()): xrows = trainer.build_dataset(xcfg, xt, verbose=False)
    conv, _ = trainer.conversations(xcfg, verbose=False)
    for row, c in list(zip(xrows, conv['conversation']))[:20]:
        text = tok.decode(row['input_ids'])
        assert text.startswith('<|im_start|><|im_start|>user\n') and '\n<|im_end|>' in text
        plain = [{k: v for k, v in x.items() if k != 'loss'} for x in conversation_messages(c)]
        assert xt.apply_chat_template(plain, tokenize=False) == text
    assert rows[0]['input_ids'] != xrows[0]['input_ids']


def test_model_template_and_bad_combinations(tok):
    cfg = config.load_config('tiny_qlora_self_cognition', ['template=model'])
    assert trainer.served_chat_template(cfg, tok) == tok.chat_template      # the tokenizer's own program, default system included
    for opts, key in ((['template=model', 'template_style=xtuner'], "'template_style'"), (['template=model', 'system=Hi'], "'system'")):
        with pytest.raises(config.ConfigError, match=key): config.load_config('tiny_qlora_self_cognition', opts)


def test_chat_with_a_template_it_cannot_read(tok):
    "A chat_template whose layout cannot be read off (it never echoes an answer) still serves: apply_chat_template's prompt, EOS as the stop."
    t = copy.deepcopy(tok)
    t.chat_template = "{% for m in messages %}{% if m['role'] == 'user' %}{{ 'Q: ' + m['content'] + '\\n' }}{% endif %}{% endfor %}{{ 'A:' }}"
    text, ids, tpl = chat.prompt_ids(t, [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello'}, {'role': 'user', 'content': 'Bye'}])
    assert tpl is None and text == 'Q: Hi\nQ: Bye\nA:' and ids == t('Q: Hi\nQ: Bye\nA:', add_special_tokens=False)['input_ids']
    assert chat.stop_ids(None, t, tpl) == [t.eos_token_id]
