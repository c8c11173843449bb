"""Every measured number a lesson's prose quotes appears in that lesson's saved outputs (or its code).

A number counts when it carries information a reader could get wrong by retyping it: a decimal with two or more
significant digits, or an integer with three or more (years and issue numbers aside). It *appears* when some number in
the lesson's outputs or code equals it at the prose's precision, directly or scaled by a power of 1,000 (134.5 M from
134,515,008) or by 100 (a percentage from a fraction). Figures from the literature or plain arithmetic on the page are
listed in the cell itself, in an HTML comment the site does not show, each item the numbers and then (where they come from):
`<!-- not computed here: 10,000 350 (LoRA paper, §1); 128 (16·√64) -->`;
the test also fails when a listed number is no longer in the cell, so the list cannot go stale.
"""
import json, re
from decimal import Decimal, InvalidOperation
from pathlib import Path
import pytest

NBS = Path(__file__).resolve().parents[1]/'nbs'
NUM = re.compile(r'(?<![\w.\-/#^])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w]|\.\d)')
POOL = re.compile(r'(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?')          # in outputs: -0.69619, x1.18, 2.3e-4 alike
VERSION = re.compile(r'\b(?:torch|transformers|peft|TRL|trl|bitsandbytes|DeepSpeed|deepspeed|datasets|Python|python|CUDA|v)\s?\d+(?:\.\d+)+')
MARK = re.compile(r'<!--\s*not computed here:(.*?)-->', re.S)


def _prose(src: str) -> str:
    "Markdown without what is not prose: code, link targets, HTML tags and comments, maths."
    for pat in (r'```.*?```', r'<!--.*?-->', r'`[^`]*`', r'\]\([^)]*\)', r'<[^>]+>', r'\$[^$]*\$', r'https?://\S+', VERSION.pattern):
        src = re.sub(pat, ' ', src, flags=re.S)
    return src


def _numbers(text: str):
    for m in NUM.finditer(text):
        yield m.group(0), m.group(1).replace(',', '') + (m.group(2) or ''), m.start()


def _counts(num: str) -> bool:
    digits = len(num.replace('.', '').lstrip('0'))
    if '.' in num: return digits >= 2
    return digits >= 3 and not re.fullmatch(r'(19|20)\d\d', num)


def _pool(nb) -> list:
    parts = []
    for c in nb['cells']:
        if c['cell_type'] != 'code': continue
        parts.append(''.join(c['source']))
        for o in c.get('outputs', []):
            parts.append(''.join(o.get('text', '')))
            parts += [''.join(v) for k, v in o.get('data', {}).items() if k.startswith('text/') and k != 'text/html']
    text = re.sub(r'(?<=\d)_(?=\d)', '', '\n'.join(parts))       # 134_515_008 in code
    found = {m.group(1).replace(',', '') + (m.group(2) or '') for m in POOL.finditer(text)}
    found |= {m.group(0) for m in re.finditer(r'\d+(?:\.\d+)?e[-+]?\d+', text)}   # 1.6e-07 and the like
    return [Decimal(n) for n in found]


def _appears(num: str, pool) -> bool:
    d = Decimal(num)
    q = Decimal(1).scaleb(-len(num.split('.')[1])) if '.' in num else Decimal(1)
    for p in pool:
        for scale in (1, 100, Decimal('0.001'), Decimal('1e-6'), Decimal('1e-9'), 1000, Decimal('1e6')):
            try:
                if (p * scale).quantize(q) == d: return True
            except InvalidOperation: pass
    return False


def unmatched(path: Path):
    "(number, context) for each number in the notebook's markdown that its outputs and code do not hold, nor a marker lists."
    nb = json.loads(path.read_text())
    pool, bad = _pool(nb), []
    for c in nb['cells']:
        if c['cell_type'] != 'markdown': continue
        src = ''.join(c['source'])
        listed = {n for m in MARK.finditer(src) for item in m.group(1).split(';') for _, n, _ in _numbers(item.split('(')[0])}
        prose = _prose(src)
        present = {n for _, n, _ in _numbers(prose)}
        bad += [(n, 'listed as not computed here but not in the cell') for n in sorted(listed - present) if _counts(n)]
        for raw, n, at in _numbers(prose):
            if _counts(n) and n not in listed and not _appears(n, pool):
                bad.append((raw, ' '.join(prose[max(0, at - 60):at + 30].split())))
    return bad


LESSONS = sorted(NBS.glob('*.ipynb'))


@pytest.mark.parametrize('path', LESSONS, ids=[p.stem for p in LESSONS])
def test_prose_numbers_come_from_outputs(path):
    bad = unmatched(path)
    assert not bad, f'{path.name}: numbers in the prose that no output or code of the lesson holds:\n' + \
        '\n'.join(f'  {n!r}: ...{ctx}...' for n, ctx in bad)


def test_the_check_can_fail():
    nb = {'cells': [{'cell_type': 'markdown', 'source': ['The step took 5.3 s and 2,913 tokens/s; r = 16. <!-- not computed here: 7,943 -->']},
                    {'cell_type': 'code', 'source': ['print(t)'], 'outputs': [{'text': ['step: 5.27 s\n', '2913.4 tokens/s']}]}]}
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        p = Path(d)/'x.ipynb'; p.write_text(json.dumps(nb))
        assert unmatched(p) == [('7943', 'listed as not computed here but not in the cell')]
        nb['cells'][1]['outputs'][0]['text'] = ['step: 5.4 s\n', '2,914 tokens/s']
        p.write_text(json.dumps(nb))
        assert [n for n, _ in unmatched(p)] == ['7943', '5.3', '2,913']
