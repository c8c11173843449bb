"""Execute lesson notebooks in place with a Jupyter kernel, top to bottom, as a learner would -- except that `#| slow` and
`#| gpu` cells are not run and keep the outputs saved in the notebook (made by `tools/run_gpu_cells.py`).

    .venv/bin/python tools/execute_lesson.py nbs/06_quantization.ipynb [nbs/07_qlora.ipynb ...]
    .venv/bin/nbdev_clean                                   # then, as after any edit
    .venv/bin/python tools/execute_lesson.py --section Exercises nbs/0*.ipynb   # only that `## ` section, in a fresh kernel
    .venv/bin/python tools/execute_lesson.py --cell 'results/bench_lora' nbs/05_lora.ipynb   # the cells holding that text (--cell again: or that one; after the
                                                             # setup above the first `## ` and the `#| export` cells before them)
    .venv/bin/python tools/execute_lesson.py --slow --cell 'run_lab(' nbs/10_lab_qlora.ipynb   # `#| slow` cells too (never `#| gpu`)

The `show_doc` cells are then re-rendered from the library by `tools/refresh_show_doc.py` (the form tests/test_api.py checks).

A cell that raises stops the run and leaves the notebook unwritten. tqdm's `IProgress not found` notice (a kernel without
ipywidgets) is dropped from the saved outputs: it is about the kernel, not the lesson.
"""
import re, sys, time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

FLAGS = {'slow', 'gpu'}
NOISE = re.compile(r'.*TqdmWarning: IProgress not found.*\n(\s+from \.autonotebook import tqdm as notebook_tqdm\n)?')


def flags(src: str) -> set:
    out = set()
    for line in src.splitlines():
        if not line.startswith('#|'): break
        out.update(line[2:].split())
    return out


def quiet(outputs: list) -> list:
    "Drop the tqdm IProgress notice from stderr streams (and a stream left empty by it)."
    kept = []
    for o in outputs:
        if o.get('output_type') == 'stream' and o.get('name') == 'stderr':
            o['text'] = NOISE.sub('', o['text'])
            if not o['text']: continue
        kept.append(o)
    return kept


def in_section(cells, title: str) -> set:
    "Indices of the cells under the `## {title}` heading, up to the next `## ` heading (a self-contained section)."
    out, inside = set(), False
    for i, c in enumerate(cells):
        if c.cell_type == 'markdown' and c.source.startswith('## '): inside = c.source[3:].split('\n')[0].strip() == title
        if inside: out.add(i)
    if not out: raise SystemExit(f'no section "## {title}" in this notebook')
    return out


def execute(path: Path, section: str=None, cells: list=None, slow: bool=False):
    nb = nbformat.read(path, as_version=4)
    only = in_section(nb.cells, section) if section else None
    if cells:   # the cells holding one of `cells`, after what they stand on: the setup above the first `## `, the exports
        only = {i for i, c in enumerate(nb.cells) if c.cell_type == 'code' and any(t in c.source for t in cells)}
        if not only: raise SystemExit(f'no code cell of {path} holds any of {cells}')
        first = next((i for i, c in enumerate(nb.cells) if c.cell_type == 'markdown' and c.source.startswith('## ')), 0)
        only |= {i for i, c in enumerate(nb.cells[:max(only)]) if c.cell_type == 'code' and (i < first or 'export' in flags(c.source))}
    client = NotebookClient(nb, kernel_name='python3', timeout=3600, resources={'metadata': {'path': str(path.parent)}})
    t0, ran = time.time(), 0
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            skip = FLAGS - ({'slow'} if slow else set())
            if cell.cell_type != 'code' or flags(cell.source) & skip or (only is not None and i not in only): continue
            client.execute_cell(cell, i)
            cell.outputs = quiet(cell.outputs); ran += 1
    nbformat.write(nb, path)
    sys.path.insert(0, str(Path(__file__).resolve().parent)); from refresh_show_doc import refresh
    refresh(path)
    print(f'{path}: {ran} cells executed in {time.time() - t0:.0f} s (flagged cells kept their saved outputs)')


if __name__ == '__main__':
    args, section, cells, slow = sys.argv[1:], None, [], False
    if args[:1] == ['--slow']: slow, args = True, args[1:]
    if args[:1] == ['--section']: section, args = args[1], args[2:]
    while args[:1] == ['--cell']: cells.append(args[1]); args = args[2:]
    for p in args: execute(Path(p), section, cells, slow)
