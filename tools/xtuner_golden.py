"""Golden outputs from the real XTuner (PyPI xtuner==0.2.0, the classic code) for learnft's parity tests.

Writes tests/data/xtuner_golden.json: XTuner's PROMPT_TEMPLATE dicts, the output of its dataset map fns
(alpaca/openai/oasst1/pretrain), `template_map_fn` + `encode_fn` for every template on a set of conversations,
and `Packer` (with and without varlen attention) on the encoded samples. Tokenizer: the bundled SmolLM2
tokenizer (learnft.models.smollm2_path()), loaded the transformers-4.48 way.

How it was run (XTuner needs its own venv, outside the repo; see shared/reference/xtuner.md):

    python3 -m venv /work/devtools/xtvenv
    /work/devtools/xtvenv/bin/pip install torch==2.13.0
    /work/devtools/xtvenv/bin/pip install --no-deps xtuner==0.2.0 mmengine==0.10.6 transformers==4.48.0 \
        datasets==3.2.0 peft==0.14.0 einops loguru sentencepiece addict yapf termcolor rich markdown-it-py mdurl \
        pygments platformdirs numpy pillow requests urllib3 idna certifi charset-normalizer pyyaml regex \
        safetensors packaging filelock tqdm fsspec typing_extensions "huggingface_hub<0.30" "tokenizers>=0.21,<0.22"
    /work/devtools/xtvenv/bin/python tools/xtuner_golden.py ~/.cache/learnft/smollm2-135m-instruct

XTuner's package `__init__` files import vision code (torchvision, skimage, ...) we do not need; the script
registers empty package modules for `xtuner`, `xtuner.dataset`, ... so only the plain-Python files it uses load.
"""
import json, sys, types, copy, pathlib, importlib.util

def import_xtuner():
    spec = importlib.util.find_spec('xtuner')
    root = pathlib.Path(spec.submodule_search_locations[0])
    for name, sub in [('xtuner', ''), ('xtuner.dataset', 'dataset'), ('xtuner.dataset.map_fns', 'dataset/map_fns'),
                      ('xtuner.dataset.map_fns.dataset_map_fns', 'dataset/map_fns/dataset_map_fns')]:
        m = types.ModuleType(name); m.__path__ = [str(root/sub)]; sys.modules[name] = m
    from xtuner.utils.templates import PROMPT_TEMPLATE
    from xtuner.dataset.utils import encode_fn, Packer
    from xtuner.dataset.map_fns.template_map_fn import template_map_fn
    from xtuner.dataset.map_fns.dataset_map_fns import alpaca_map_fn, openai_map_fn, oasst1_map_fn, pretrain_map_fn
    maps = dict(alpaca=alpaca_map_fn.alpaca_map_fn, openai=openai_map_fn.openai_map_fn,
                oasst=oasst1_map_fn.oasst1_map_fn, pretrain=pretrain_map_fn.pretrain_map_fn)
    return PROMPT_TEMPLATE, encode_fn, Packer, template_map_fn, maps

# raw rows, each in one source format; 'xtuner' rows are already in XTuner's conversation schema
ROWS = [
    ('alpaca', {'instruction': 'Give three tips for staying healthy.', 'input': '', 'output': '1. Eat well.\n2. Sleep.\n3. Move.'}),
    ('alpaca', {'instruction': 'Translate to French.', 'input': 'Good morning', 'output': 'Bonjour'}),
    ('alpaca', {'instruction': 'Say nothing.', 'input': '', 'output': '<nooutput>'}),
    ('openai', {'messages': [{'role': 'system', 'content': 'You are terse.'}, {'role': 'user', 'content': 'Hi'},
                             {'role': 'assistant', 'content': 'Hello.'}, {'role': 'user', 'content': 'What is 2+2?'},
                             {'role': 'assistant', 'content': '4'}]}),
    ('openai', {'messages': [{'role': 'assistant', 'content': 'I speak first.'}, {'role': 'user', 'content': 'Part one. '},
                             {'role': 'user', 'content': 'Part two.'}, {'role': 'assistant', 'content': 'Draft answer', 'loss': False},
                             {'role': 'user', 'content': 'Better?'}, {'role': 'assistant', 'content': 'Final answer', 'loss': 'True'}]}),
    ('oasst', {'text': '### Human: Can you explain gravity?### Assistant: Mass attracts mass.### Human: Why?### Assistant: Spacetime curves.### Human: Thanks'}),
    ('pretrain', {'text': '  增量预训练 keeps every token.\nPlain text, no template.  '}),
    ('xtuner', {'conversation': [{'system': '你是一个乐于助人的助手。', 'input': '你好', 'output': '你好！有什么可以帮你？'},
                                 {'input': '1+1=?', 'output': '2'}]}),
    ('xtuner', {'conversation': [{'input': 'Tell me a long story about a cat.',
                                  'output': 'Once upon a time there was a cat. ' * 6}]}),
]
MAX_LENGTH = 512
SHORT_MAX_LENGTH = 24   # exercises truncation
PACK_CHUNK = 64

def main(model_dir):
    from transformers import PreTrainedTokenizerFast
    PROMPT_TEMPLATE, encode_fn, Packer, template_map_fn, maps = import_xtuner()
    tok = PreTrainedTokenizerFast(tokenizer_file=str(pathlib.Path(model_dir)/'tokenizer.json'),
                                  bos_token='<|im_start|>', eos_token='<|im_end|>')
    out = {'xtuner_version': '0.2.0', 'tokenizer': 'SmolLM2-135M-Instruct tokenizer.json, bos=<|im_start|> eos=<|im_end|>',
           'max_length': MAX_LENGTH, 'short_max_length': SHORT_MAX_LENGTH, 'pack_chunk': PACK_CHUNK,
           'templates': {k: dict(v) for k, v in PROMPT_TEMPLATE.items()},
           'rows': [{'format': f, 'row': r} for f, r in ROWS], 'mapped': [], 'encoded': {}, 'packed': {}}
    convs = []
    for fmt, row in ROWS:
        conv = copy.deepcopy(row) if fmt == 'xtuner' else maps[fmt](copy.deepcopy(row))
        out['mapped'].append(conv); convs.append(conv)
    for name, tpl in PROMPT_TEMPLATE.items():
        recs = []
        for i, conv in enumerate(convs):
            if not conv['conversation']: continue
            fmt = ROWS[i][0]
            # XTuner configs use no template_map_fn for incremental pre-training data
            try:
                ex = copy.deepcopy(conv) if fmt == 'pretrain' else template_map_fn(copy.deepcopy(conv), tpl)
            except Exception as e:   # e.g. a system message with a template that has no SYSTEM
                recs.append({'row': i, 'error': type(e).__name__, 'message': str(e)}); continue
            for ml in (MAX_LENGTH, SHORT_MAX_LENGTH):
                enc = encode_fn(copy.deepcopy(ex), tok, ml)
                recs.append({'row': i, 'max_length': ml, **({'templated': ex} if ml == MAX_LENGTH else {}), **enc,
                             'kept': any(l >= 0 for l in enc['labels'])})  # process_hf_dataset drops label-less samples
        out['encoded'][name] = recs
    # Packer, the way process_hf_dataset calls it: dataset.map(Packer(...), batched=True, batch_size=...)
    samples = [r for r in out['encoded']['internlm2_chat'] if r['max_length'] == MAX_LENGTH and r['kept']]
    batch = {'input_ids': [s['input_ids'] for s in samples], 'labels': [s['labels'] for s in samples]}
    for varlen in (False, True):
        for bs in (3, 1000):
            packer, rows = Packer(PACK_CHUNK, use_varlen_attn=varlen), []
            for b in range(0, len(samples), bs):
                res = packer({k: v[b:b+bs] for k, v in batch.items()})
                rows += [dict(zip(res, vals)) for vals in zip(*res.values())]
            out['packed'][f'varlen={varlen},batch_size={bs}'] = [
                {k: [int(x) for x in v] for k, v in r.items()} for r in rows]
    dst = pathlib.Path(__file__).resolve().parents[1]/'tests/data/xtuner_golden.json'
    dst.write_text(json.dumps(out, ensure_ascii=False, separators=(',', ':')))
    print('wrote', dst, dst.stat().st_size, 'bytes;', sum(len(v) for v in out['encoded'].values()), 'encodings')

if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else str(pathlib.Path.home()/'.cache/learnft/smollm2-135m-instruct'))
