"""Golden MOSS encodings from the real XTuner (PyPI xtuner==0.2.0): `xtuner.dataset.moss_sft.MOSSSFTDataset` on a few
MOSS-003 plugin rows, tokenized with the bundled SmolLM2 tokenizer. Writes tests/data/xtuner_moss_golden.json
(rows + XTuner's input_ids and labels), which tests/test_tools.py compares with `learnft.tools.encode_moss`.

Run in XTuner's own venv (see tools/xtuner_golden.py for how it was built):

    /work/devtools/xtvenv/bin/python tools/xtuner_moss_golden.py ~/.cache/learnft/smollm2-135m-instruct
"""
import json, sys, types, pathlib, tempfile, importlib.util

META = ('You are an AI assistant whose name is MOSS.\n- MOSS is a conversational language model that is developed by Fudan University.\n'
        'Capabilities and tools that MOSS can possess.\n- Inner thoughts: enabled.\n- Web search: enabled. API: Search(query)\n'
        '- Calculator: enabled. API: Calculate(expression)\n- Equation solver: enabled. API: Solve(equation)\n')
ROWS = [
    {'meta_instruction': META, 'num_turns': 1, 'chat': {'turn_1': {
        'Human': '<|Human|>: What is 37*24?<eoh>\n', 'Inner Thoughts': '<|Inner Thoughts|>: I need the calculator for this<eot>\n',
        'Commands': '<|Commands|>: Calculate("37*24")<eoc>\n', 'Tool Responses': '<|Results|>:\nCalculate("37*24") =>\n888\n<eor>\n',
        'MOSS': '<|MOSS|>: 37*24 = 888.<eom>\n'}}},
    {'meta_instruction': META, 'num_turns': 2, 'chat': {
        'turn_1': {'Human': '<|Human|>: Solve 2x + 3 = 11, please.<eoh>\n', 'Inner Thoughts': '<|Inner Thoughts|>: An equation: use the solver.<eot>\n',
                   'Commands': '<|Commands|>: Solve("2*x + 3 = 11")<eoc>\n', 'Tool Responses': '<|Results|>:\nSolve("2*x + 3 = 11") =>\nx = 4\n<eor>\n',
                   'MOSS': '<|MOSS|>: x = 4.<eom>\n'},
        'turn_2': {'Human': '<|Human|>: 谢谢！<eoh>\n', 'MOSS': '<|MOSS|>: 不客气。<eom>\n'}}},
    {'meta_instruction': META, 'num_turns': 1, 'chat': {'turn_1': {
        'Human': '<|Human|>: Who made MOSS, and what is XTuner?<eoh>\n', 'Inner Thoughts': '<|Inner Thoughts|>: Two searches.<eot>\n',
        'Commands': '<|Commands|>: Search("MOSS"), Search("XTuner")<eoc>\n',
        'Tool Responses': '<|Results|>:\nSearch("MOSS") =>\n<|1|>: MOSS: an open model from Fudan University.\nSearch("XTuner") =>\n<|1|>: XTuner: a fine-tuning toolkit.\n<eor>\n',
        'MOSS': '<|MOSS|>: Fudan University made MOSS; XTuner is a fine-tuning toolkit.<eom>\n'}}},
]

def main(tokenizer_dir):
    spec = importlib.util.find_spec('xtuner')
    root = pathlib.Path(spec.submodule_search_locations[0])
    for name, sub in [('xtuner', ''), ('xtuner.dataset', 'dataset')]:   # skip the package __init__s (vision imports)
        m = types.ModuleType(name); m.__path__ = [str(root / sub)]; sys.modules[name] = m
    from xtuner.dataset.moss_sft import MOSSSFTDataset
    from transformers import PreTrainedTokenizerFast
    d = pathlib.Path(tokenizer_dir)
    cfg = json.loads((d / 'tokenizer_config.json').read_text())
    tok = PreTrainedTokenizerFast(tokenizer_file=str(d / 'tokenizer.json'), bos_token=cfg.get('bos_token'), eos_token=cfg.get('eos_token'))
    with tempfile.TemporaryDirectory() as tmp:
        f = pathlib.Path(tmp) / 'moss.jsonl'
        f.write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in ROWS))
        ds = MOSSSFTDataset(str(f), tok, max_length=2048)
        out = [{'row': r, 'input_ids': ds[i]['input_ids'], 'labels': ds[i]['labels']} for i, r in enumerate(ROWS)]
    dest = pathlib.Path(__file__).resolve().parents[1] / 'tests' / 'data' / 'xtuner_moss_golden.json'
    dest.write_text(json.dumps({'xtuner': '0.2.0', 'tokenizer': 'SmolLM2-135M-Instruct', 'samples': out}, ensure_ascii=False))
    print('wrote', dest, len(out), 'samples')

if __name__ == '__main__': main(sys.argv[1])
