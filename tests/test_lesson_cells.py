"""Lessons read as lessons: no visible code cell is a wall of code.

A long cell that is infrastructure (a cache, a launcher, a parser the lesson is not about) is folded: its metadata holds
`jupyter.source_hidden` (JupyterLab shows it collapsed) and `learnft.fold`, the summary the site shows on its fold
(`tools/build_docs.py`; an exported cell is not shown on a lesson's page at all, its functions are on the reference pages).
Solutions are folded with `#| code-fold: true`. Everything else stays at most `LIMIT` lines."""
import json
from pathlib import Path

import pytest

NBS = Path(__file__).resolve().parents[1]/'nbs'
LIMIT = 60


def long_visible_cells(nb: dict, limit: int=LIMIT) -> list:
    "(cell index, lines, first line) of each code cell longer than `limit` lines that is neither folded nor hidden."
    out = []
    for i, c in enumerate(nb['cells']):
        if c['cell_type'] != 'code': continue
        src = ''.join(c['source']); head = [l for l in src.splitlines() if l.startswith('#|')]
        folded = c.get('metadata', {}).get('learnft', {}).get('fold') or any('code-fold: true' in l or l.strip() == '#| hide' for l in head)
        if folded: assert c['metadata'].get('jupyter', {}).get('source_hidden') or head, f'cell {i} is folded on the site only'
        n = src.count('\n') + 1
        if n > limit and not folded: out.append((i, n, src.splitlines()[0]))
    return out


@pytest.mark.parametrize('path', sorted(NBS.glob('*.ipynb')), ids=lambda p: p.stem)
def test_no_wall_of_code(path):
    bad = long_visible_cells(json.loads(path.read_text()))
    assert not bad, f'{path.name}: visible code cells over {LIMIT} lines (fold them, with a summary, or split them): {bad}'


def test_the_check_can_fail():
    long = {'cell_type': 'code', 'metadata': {}, 'source': ['x = 1\n'] * 70}
    assert long_visible_cells({'cells': [long]}) == [(0, 71, 'x = 1')]
    folded = {**long, 'metadata': {'learnft': {'fold': 'a cache'}, 'jupyter': {'source_hidden': True}}}
    assert long_visible_cells({'cells': [folded]}) == []
