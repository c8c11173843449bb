"""The library's public API as a reader meets it: one exported name, one module; and every lesson's `show_doc` cell (the
API reference the site shows, saved with the notebook) equal to what the library renders now, source-line link included."""
import importlib, pkgutil, sys
from collections import defaultdict
from pathlib import Path

import pytest
import learnft

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
from refresh_show_doc import cells_of, render, saved

def test_no_name_is_exported_by_two_modules():
    where = defaultdict(list)
    for m in pkgutil.iter_modules(learnft.__path__):
        if m.name.startswith('_'): continue
        for name in getattr(importlib.import_module(f'learnft.{m.name}'), '__all__', []): where[name].append(m.name)
    assert not {n: ms for n, ms in where.items() if len(ms) > 1}

@pytest.mark.parametrize('nb', sorted(p.name for p in (ROOT/'nbs').glob('[0-9]*.ipynb')))
def test_show_doc_cells_are_current(nb):
    "A stale cell fails here; `python tools/refresh_show_doc.py` re-renders them all."
    _, module, found = cells_of(ROOT/'nbs'/nb)
    stale = [name for cell, name in found if saved(cell) != render(module, name)]
    assert not stale, f'{nb}: show_doc output out of date for {stale}; run: python tools/refresh_show_doc.py'

def test_a_stale_cell_is_seen(tmp_path):
    "The check itself: change one saved line number and it is reported."
    import json
    nb = json.loads((ROOT/'nbs'/'06_quantization.ipynb').read_text())
    cell = next(c for c in nb['cells'] if ''.join(c['source']).strip() == 'show_doc(quantize_4bit)')
    md = ''.join(cell['outputs'][0]['data']['text/markdown'])
    assert saved(cell) == render('quant', 'quantize_4bit')
    cell['outputs'][0]['data']['text/markdown'] = md.replace('quant.py#L', 'quant.py#L1')
    assert saved(cell) != render('quant', 'quantize_4bit')
    with pytest.raises(LookupError, match='documents learnft.quant.quantize_4bit'): render('qlora', 'quantize_4bit')


def test_peft_checkpointing_notice_is_silenced():
    "peft's `is_gradient_checkpointing` question (a transformers 5 FutureWarning) does not reach a learner's output once learnft is imported; without learnft it does (the control)."
    import subprocess
    run = """
from learnft.models import tiny_smollm2
from peft import LoraConfig, get_peft_model
m = tiny_smollm2(with_tokenizer=False)
get_peft_model(m, LoraConfig(r=2, target_modules=['q_proj']))
"""
    def stderr(prelude):
        r = subprocess.run([sys.executable, '-W', 'default', '-c', prelude + run], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stderr
    assert 'is_gradient_checkpointing' not in stderr('import learnft\n')
    # the control: the same lines with learnft's filter taken out again
    assert 'is_gradient_checkpointing' in stderr("import learnft, warnings\nwarnings.filters[:] = [f for f in warnings.filters if 'is_gradient' not in str(f[1])]\n")
