"""Chat templates: the registry renders exactly like the official jinja templates (property tests on random
conversations), spans tile the text and carry the contents, `from_tokenizer` recovers the spans of any jinja template,
`as_xtuner()` is XTuner's dict, and bad input names the message index. Runs in ~30 s on 2 busy cores."""
import copy, dataclasses

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from transformers.utils.chat_template_utils import render_jinja_template

from learnft.templates import Template, TemplateError, check_template, get_template, stop_token_ids

# Official chat templates, as data. Each is the jinja string of the model's tokenizer_config.json (source beside it),
# with the special-token strings it reads. Texts checked against copies quoted in public code (transformers/huggingface.js
# chat-template test fixtures, llama.cpp test-chat-template.cpp).
OFFICIAL = {
    # Qwen/Qwen2.5-7B-Instruct, tokenizer_config.json "chat_template"
    'qwen_chat': ('{%- if tools %}\n    {{- \'<|im_start|>system\\n\' }}\n    {%- if messages[0][\'role\'] == \'system\' %}\n        {{- messages[0][\'content\'] }}\n    {%- else %}\n        {{- \'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\' }}\n    {%- endif %}\n    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n    {%- for tool in tools %}\n        {{- "\\n" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n{%- else %}\n    {%- if messages[0][\'role\'] == \'system\' %}\n        {{- \'<|im_start|>system\\n\' + messages[0][\'content\'] + \'<|im_end|>\\n\' }}\n    {%- else %}\n        {{- \'<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n\' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}\n        {{- \'<|im_start|>\' + message.role + \'\\n\' + message.content + \'<|im_end|>\' + \'\\n\' }}\n    {%- elif message.role == "assistant" %}\n        {{- \'<|im_start|>\' + message.role }}\n        {%- if message.content %}\n            {{- \'\\n\' + message.content }}\n        {%- endif %}\n        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n            {{- \'\\n<tool_call>\\n{"name": "\' }}\n            {{- tool_call.name }}\n            {{- \'", "arguments": \' }}\n            {{- tool_call.arguments | tojson }}\n            {{- \'}\\n</tool_call>\' }}\n        {%- endfor %}\n        {{- \'<|im_end|>\\n\' }}\n    {%- elif message.role == "tool" %}\n        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n            {{- \'<|im_start|>user\' }}\n        {%- endif %}\n        {{- \'\\n<tool_response>\\n\' }}\n        {{- message.content }}\n        {{- \'\\n</tool_response>\' }}\n        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n            {{- \'<|im_end|>\\n\' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- \'<|im_start|>assistant\\n\' }}\n{%- endif %}\n',
        {}),
    # internlm/internlm2-chat-7b, tokenizer_config.json "chat_template"
    'internlm2_chat': ("{{ bos_token }}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
        {'bos_token': '<s>', 'eos_token': '</s>'}),
    # meta-llama/Meta-Llama-3-8B-Instruct, tokenizer_config.json "chat_template"
    'llama3_chat': ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
        {'bos_token': '<|begin_of_text|>', 'eos_token': '<|eot_id|>'}),
    # meta-llama/Llama-2-7b-chat-hf, tokenizer_config.json "chat_template"
    'llama2_chat': ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
        {'bos_token': '<s>', 'eos_token': '</s>'}),
    # mistralai/Mistral-7B-Instruct-v0.2 (original revision), tokenizer_config.json "chat_template"
    'mistral': ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
        {'bos_token': '<s>', 'eos_token': '</s>'}),
    # HuggingFaceH4/zephyr-7b-beta, tokenizer_config.json "chat_template"
    'zephyr': ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}",
        {'bos_token': '<s>', 'eos_token': '</s>'}),
    # google/gemma-2-9b-it (and gemma-7b-it), tokenizer_config.json "chat_template"
    'gemma': ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}",
        {'bos_token': '<bos>', 'eos_token': '<eos>'}),
    # microsoft/Phi-3-mini-4k-instruct, tokenizer_config.json "chat_template"
    'phi3_chat': ("{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}",
        {'bos_token': '<s>', 'eos_token': '<|endoftext|>'}),
    # THUDM/chatglm3-6b, tokenizer_config.json "chat_template"
    'chatglm3': ("{% for message in messages %}{% if loop.first %}[gMASK]sop<|{{ message['role'] }}|>\n {{ message['content'] }}{% else %}<|{{ message['role'] }}|>\n {{ message['content'] }}{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}",
        {'eos_token': '</s>'}),
}

# XTuner's PROMPT_TEMPLATE values (xtuner/utils/templates.py, InternLM/xtuner v0.1.x), keys it leaves out at their defaults.
XT_DEFAULTS = dict(SUFFIX='', SUFFIX_AS_EOS=False, SEP='', STOP_WORDS=[])
XTUNER = {
    'default': dict(SYSTEM='<|System|>:{system}\n', INSTRUCTION='<|User|>:{input}\n<|Bot|>:', SEP='\n'),
    'zephyr': dict(SYSTEM='<|system|>\n{system}\n', INSTRUCTION='<|user|>\n{input}\n<|assistant|>\n', SEP='\n'),
    'internlm_chat': dict(SYSTEM='<|System|>:{system}\n', INSTRUCTION='<|User|>:{input}<eoh>\n<|Bot|>:', SUFFIX='<eoa>',
                          SUFFIX_AS_EOS=True, SEP='\n', STOP_WORDS=['<eoa>']),
    'internlm2_chat': dict(SYSTEM='<|im_start|>system\n{system}<|im_end|>\n',
                           INSTRUCTION='<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n',
                           SUFFIX='<|im_end|>', SUFFIX_AS_EOS=True, SEP='\n', STOP_WORDS=['<|im_end|>']),
    'moss_sft': dict(SYSTEM='{system}\n', INSTRUCTION='<|Human|>: {input}<eoh>\n', SEP='\n', STOP_WORDS=['<eoc>', '<eom>']),
    'llama2_chat': dict(SYSTEM='[INST] <<SYS>>\n You are a helpful, respectful and honest assistant. Always answer as helpfully as '
                               'possible, while being safe. Your answers should not include any harmful, unethical, racist, sexist, '
                               'toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased and '
                               'positive in nature.\n{system}\n<</SYS>>\n [/INST] ',
                        INSTRUCTION='[INST] {input} [/INST]', SEP='\n'),
    'chatglm3': dict(SYSTEM='<|system|>\n{system}', INSTRUCTION='<|user|>\n{input}<|assistant|>\n', SEP='\n'),
    'qwen_chat': dict(SYSTEM='<|im_start|>system\n{system}<|im_end|>\n',
                      INSTRUCTION='<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n',
                      SUFFIX='<|im_end|>', SUFFIX_AS_EOS=True, SEP='\n', STOP_WORDS=['<|im_end|>', '<|endoftext|>']),
    'mistral': dict(SYSTEM='[INST] {system} [/INST]\n', INSTRUCTION='[INST] {input} [/INST]', SEP='\n'),
    'gemma': dict(SYSTEM='<start_of_turn>system\n{system}<end_of_turn>\n',
                  INSTRUCTION='<start_of_turn>user\n{input}<end_of_turn>\n<start_of_turn>model\n',
                  SUFFIX='<end_of_turn>', SUFFIX_AS_EOS=False, SEP='\n', STOP_WORDS=['<end_of_turn>']),
    'llama3_chat': dict(SYSTEM='<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>',
                        INSTRUCTION='<|start_header_id|>user<|end_header_id|>\n\n{input}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
                        SUFFIX='<|eot_id|>', SUFFIX_AS_EOS=True, STOP_WORDS=['<|eot_id|>']),
    'phi3_chat': dict(SYSTEM='<|system|>\n{system}<|end|>\n', INSTRUCTION='<|user|>\n{input}<|end|>\n<|assistant|>\n',
                      SUFFIX='<|end|>', SUFFIX_AS_EOS=True, SEP='\n', STOP_WORDS=['<|end|>']),
    'chatglm2': dict(SYSTEM='{system}\n', INSTRUCTION='[Round {round}]\n\n问：{input}\n\n答：', SEP='\n\n'),
}
NO_SYSTEM = {'gemma', 'mistral'}          # their official jinja raises on a system message
STRIPS = {'llama3_chat', 'gemma', 'llama2_chat'}


def official(name, messages, add_generation_prompt):
    jinja, special = OFFICIAL[name]
    texts, _ = render_jinja_template(conversations=[messages], chat_template=jinja,
                                     add_generation_prompt=add_generation_prompt, **special)
    return texts[0]


# contents with the characters that break naive templates: whitespace at the ends, newlines, braces, markers, unicode
TEXT = st.text(alphabet=st.sampled_from(list('ab Z09 \n\t{}<>|/\\\'"é中')), max_size=10)


@st.composite
def conversations(draw, system=True, text=TEXT):
    msgs = []
    if system and draw(st.booleans()): msgs.append({'role': 'system', 'content': draw(text)})
    turns = draw(st.integers(1, 3))
    for i in range(turns):
        msgs.append({'role': 'user', 'content': draw(text)})
        if i < turns - 1 or draw(st.booleans()): msgs.append({'role': 'assistant', 'content': draw(text)})
    return msgs


def check_tiling(text, spans):
    assert spans and spans[0].start == 0 and spans[-1].end == len(text)
    assert all(a.end == b.start and a.start < a.end for a, b in zip(spans, spans[1:]))
    assert all(s.role in ('system', 'user', 'assistant', 'scaffold') for s in spans)


@pytest.mark.parametrize('name', sorted(OFFICIAL))
def test_registry_renders_like_the_official_jinja(name):
    t = get_template(name)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(conversations(system=name not in NO_SYSTEM), st.booleans())
    def prop(msgs, gp):
        assert t.render(msgs, add_generation_prompt=gp) == official(name, msgs, gp)
        text, spans = t.render_spans(msgs, add_generation_prompt=gp)
        check_tiling(text, spans)
        if name in STRIPS: return
        for i, m in enumerate(msgs):   # each message's spans hold exactly its content (+ the end-of-turn for answers)
            got = ''.join(text[sp.start:sp.end] for sp in spans if sp.role != 'scaffold' and sp.message == i)
            assert got == m['content'] + (t.official.assistant[1] if m['role'] == 'assistant' else '')
    prop()


@pytest.mark.parametrize('name', sorted(NO_SYSTEM))
def test_no_system_role_is_refused_like_the_official(name):
    msgs = [{'role': 'system', 'content': 's'}, {'role': 'user', 'content': 'u'}]
    with pytest.raises(Exception): official(name, msgs, True)
    with pytest.raises(TemplateError, match="message 0: template .* has no system role"): get_template(name).render(msgs)


@pytest.mark.parametrize('name', sorted(XTUNER))
def test_as_xtuner_is_xtuners_dict(name):
    assert get_template(name).as_xtuner() == {**XT_DEFAULTS, **XTUNER[name]}


def test_xtuner_style_round_and_eos():
    msgs = [{'role': 'user', 'content': 'q1'}, {'role': 'assistant', 'content': 'a1'}, {'role': 'user', 'content': 'q2'}]
    assert get_template('chatglm2').render(msgs, style='xtuner', eos_token='</s>') == \
        '[Round 1]\n\n问：q1\n\n答：a1</s>\n\n[Round 2]\n\n问：q2\n\n答：'
    # the reference rendering of classic XTuner's encode_fn (default template, BOS again after each EOS)
    two = [{'role': 'system', 'content': 'SYS'}, {'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello'},
           {'role': 'user', 'content': 'Q2'}, {'role': 'assistant', 'content': 'A2'}]
    assert get_template('default').render(two, style='xtuner', bos_token='<s>', eos_token='</s>') == \
        '<s><|System|>:SYS\n<|User|>:Hi\n<|Bot|>:Hello</s>\n<s><|User|>:Q2\n<|Bot|>:A2</s>\n'
    assert get_template('internlm2_chat').render(two, style='xtuner', bos_token='<s>', eos_token='</s>') == (
        '<s><|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n'
        '<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n')


_TOK = {}
def smol_tok():
    if 'tok' not in _TOK:
        from learnft.models import load_smollm2_tokenizer
        _TOK['tok'] = load_smollm2_tokenizer()
    return _TOK['tok']


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conversations(), st.booleans())
def test_smollm2_parity_with_the_bundled_tokenizer(msgs, gp):
    tok, t = smol_tok(), get_template('smollm2')
    assert t.render(msgs, add_generation_prompt=gp) == tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gp)
    auto = Template.from_tokenizer(tok)
    assert auto.render_spans(msgs, gp) == t.render_spans(msgs, gp)


NONEMPTY = TEXT.map(str.strip).filter(bool)

@pytest.mark.parametrize('name', sorted(OFFICIAL))
def test_from_tokenizer_finds_the_spans_of_any_template(name):
    tok = copy.deepcopy(smol_tok())
    tok.chat_template = OFFICIAL[name][0]
    t = Template.from_tokenizer(tok, name)

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(conversations(system=name not in NO_SYSTEM, text=NONEMPTY if name == 'llama2_chat' else TEXT), st.booleans())
    def prop(msgs, gp):
        text, spans = t.render_spans(msgs, gp)
        assert text == tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gp)
        check_tiling(text, spans)
        for i, m in enumerate(msgs):
            got = ''.join(text[s.start:s.end] for s in spans if s.message == i)
            c = m['content'].strip() if name in STRIPS else m['content']
            assert got in (c, c + t.suffix), (got, c, t.suffix)
    prop()


@pytest.mark.parametrize('msgs, match', [
    ([], 'messages is empty'),
    ('hi', 'messages must be a list'),
    ([{'role': 'user', 'content': 'a'}, {'role': 'robot', 'content': 'b'}], "message 1: unknown role 'robot'"),
    ([{'role': 'user', 'content': 3}], r'message 0 \(user\): content must be a str, got int'),
    ([{'role': 'user'}], "message 0: expected a dict with 'role' and 'content'"),
    ([{'role': 'user', 'content': 'a'}, {'role': 'system', 'content': 'b'}], 'message 1: a system message is only allowed first'),
])
def test_bad_input_names_the_message(msgs, match):
    with pytest.raises(TemplateError, match=match): get_template('smollm2').render(msgs)


def test_alternation_required_where_the_template_requires_it():
    msgs = [{'role': 'user', 'content': 'a'}, {'role': 'user', 'content': 'b'}]
    for name in ('mistral', 'gemma', 'llama2_chat'):
        with pytest.raises(TemplateError, match="message 1: expected role 'assistant', got 'user'"): get_template(name).render(msgs)
    assert get_template('smollm2').render(msgs)       # ChatML does not require it ...
    with pytest.raises(TemplateError, match="message 1: expected role 'assistant'"):   # ... but XTuner's turns do
        get_template('smollm2').render(msgs, style='xtuner')


def test_unknown_template_lists_names_and_closest():
    with pytest.raises(TemplateError, match=r"unknown template 'llama3'; the closest is 'llama3_chat'\. Known templates: .*smollm2"):
        get_template('llama3')


def test_stop_ids_and_doctor_on_the_bundled_tokenizer():
    tok = smol_tok()
    assert stop_token_ids('smollm2', tok) == [tok.convert_tokens_to_ids('<|im_end|>')]
    assert check_template(tok, 'smollm2') == []
    bad = copy.deepcopy(tok); bad.eos_token = '<|endoftext|>'
    assert [f.check for f in check_template(bad, dataclasses.replace(get_template('smollm2'), stop_words=[]))] == ['end_of_turn_not_stop']
    assert {f.check for f in check_template(tok, 'gemma')} == {'mismatch', 'split_special'}
