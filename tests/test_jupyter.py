"A lesson run through a real Jupyter kernel (nbclient), as a learner's run in JupyterLab would do it."
import json, os
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from conftest import ROOT


def _skip_flagged(nb, flags=('slow', 'gpu')):
    "Drop cells flagged like nbdev_test does by default (`#| slow`, `#| gpu`)."
    keep = []
    for c in nb.cells:
        first = c.source.lstrip().splitlines()[0] if c.source.strip() else ''
        if c.cell_type == 'code' and first.startswith('#|') and first[2:].strip() in flags: continue
        keep.append(c)
    nb.cells = keep
    return nb


def test_models_lesson_runs_in_a_kernel(tmp_path):
    nb = _skip_flagged(nbformat.read(ROOT/'nbs'/'00_models.ipynb', as_version=4))
    for c in nb.cells:
        if 'nbdev_export()' in c.source: c.source = ''  # do not rewrite the library from a test
    NotebookClient(nb, timeout=600, kernel_name='python3',
                   resources={'metadata': {'path': str(ROOT/'nbs')}}).execute()
    texts = [o.get('text', '') + json.dumps(o.get('data', {})) for c in nb.cells if c.cell_type == 'code' for o in c.outputs]
    errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']
    assert not errors, errors[0]
    assert any('Paris' in t for t in texts), 'the first generation should answer Paris'
    assert any('image/png' in t for t in texts), 'the architecture plot should render'
