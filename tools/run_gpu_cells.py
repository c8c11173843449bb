"""Run a notebook's flagged cells (`#| gpu` by default, or `#| slow`) outside Jupyter, save their outputs, inject them back.

CI has no GPU, so nbdev_test skips `#| gpu` cells (settings.ini `tst_flags = slow gpu`), yet the rendered lesson should
show what they print and plot. This runs only the flagged cells, in order, in one namespace that starts with
`from learnft.<default_exp> import *` (flagged cells import anything else they need themselves), captures each cell's
stdout and matplotlib figures (`plt.show()` saves PNGs), and writes them as nbformat outputs to a JSON file; `--inject`
then puts those outputs into the notebook's cells (matched by cell id, and only if the source is unchanged).

On a GPU machine (bitsandbytes installed, the repo on PYTHONPATH):
    python tools/run_gpu_cells.py nbs/07_qlora.ipynb --out gpu_outputs.json
Back here:
    python tools/run_gpu_cells.py nbs/07_qlora.ipynb --inject gpu_outputs.json && nbdev_clean --fname nbs/07_qlora.ipynb
A long CPU cell the same way: `--flag slow --out slow_outputs.json` (with OMP_NUM_THREADS=1 on a shared machine).
"""
import argparse, base64, hashlib, io, json, re, sys, time, traceback
from contextlib import redirect_stdout


def cell_flags(source: str) -> set:
    "The nbdev directives at the top of a code cell, e.g. {'gpu'} for a cell starting `#| gpu`."
    flags = set()
    for line in source.splitlines():
        if not line.startswith('#|'): break
        flags.update(line[2:].split())
    return flags


def src_of(cell) -> str: return ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
def digest(s: str) -> str: return hashlib.sha1(s.encode()).hexdigest()[:12]


class _Tee(io.TextIOBase):
    "stdout that goes to the terminal and into the current cell's outputs (consecutive writes form one stream output)."
    def __init__(self, outputs): self.outputs = outputs
    def write(self, s):
        sys.__stdout__.write(s); sys.__stdout__.flush()
        if self.outputs and self.outputs[-1]['output_type'] == 'stream': self.outputs[-1]['text'] += s
        else: self.outputs.append({'output_type': 'stream', 'name': 'stdout', 'text': s})
        return len(s)


def run(nb_path: str, flag: str='gpu', out: str=None, only: list=None) -> list:
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    nb = json.load(open(nb_path))
    cells = nb['cells']
    mod = next((m.group(1) for c in cells if c['cell_type'] == 'code'
                for m in [re.search(r'^#\|\s*default_exp\s+(\S+)', src_of(c), re.M)] if m), None)
    ns = {'__name__': '__main__'}
    if mod: exec(f'from learnft.{mod} import *', ns)
    current = []
    def show(*args, **kwargs):   # plt.show(): every open figure becomes a display_data PNG, as Jupyter's inline backend
        for num in plt.get_fignums():
            fig = plt.figure(num); buf = io.BytesIO()
            fig.savefig(buf, format='png', bbox_inches='tight')
            w, h = fig.get_size_inches() * fig.dpi
            current.append({'output_type': 'display_data', 'metadata': {},
                            'data': {'image/png': base64.b64encode(buf.getvalue()).decode(),
                                     'text/plain': f'<Figure size {w:.0f}x{h:.0f} with {len(fig.axes)} Axes>'}})
        plt.close('all')
    plt.show = show
    results, failed = [], 0
    for i, c in enumerate(cells):
        if c['cell_type'] != 'code' or flag not in cell_flags(src_of(c)): continue
        if only and c.get('id') not in only: continue
        src = src_of(c); current.clear(); t = time.time()
        print(f'--- cell {i} ({c.get("id")}) ---', file=sys.__stdout__, flush=True)
        with redirect_stdout(_Tee(current)):
            try:
                exec(compile(src, f'<{nb_path} cell {i}>', 'exec'), ns)
                show()
            except BaseException as e:   # record the error as the cell's output and go on with the next cell
                failed += 1; traceback.print_exc()
                current.append({'output_type': 'error', 'ename': type(e).__name__, 'evalue': str(e),
                                'traceback': traceback.format_exc().splitlines()})
        results.append({'index': i, 'id': c.get('id'), 'sha': digest(src), 'seconds': round(time.time() - t, 1),
                        'outputs': list(current)})
        if out: json.dump(results, open(out, 'w'))   # after every cell: a run killed at its time limit keeps what it did
    print(f'{len(results)} `#| {flag}` cells run, {failed} failed', file=sys.__stdout__)
    return results


def inject(nb_path: str, results_path: str, allow_errors: bool=False):
    "Put the saved outputs into the notebook's cells, matched by cell id (or index) and unchanged source."
    nb = json.load(open(nb_path)); cells = nb['cells']
    by_id = {c.get('id'): i for i, c in enumerate(cells)}
    for r in json.load(open(results_path)):
        i = by_id.get(r['id'], r['index'])
        if digest(src_of(cells[i])) != r['sha']:
            raise SystemExit(f"cell {i} ({r['id']}) changed since its outputs were made: run the cells again")
        if not allow_errors and any(o['output_type'] == 'error' for o in r['outputs']):
            raise SystemExit(f"cell {i} ({r['id']}) raised an error: {[o['evalue'] for o in r['outputs'] if o['output_type'] == 'error']}")
        cells[i]['outputs'] = r['outputs']; cells[i]['execution_count'] = None
        print(f"cell {i}: {len(r['outputs'])} outputs ({r['seconds']} s)")
    with open(nb_path, 'w') as f: json.dump(nb, f, indent=1, ensure_ascii=False); f.write('\n')


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('notebook'); ap.add_argument('--flag', default='gpu')
    ap.add_argument('--out', help='write the outputs JSON here'); ap.add_argument('--inject', help='outputs JSON to put into the notebook')
    ap.add_argument('--allow-errors', action='store_true')
    ap.add_argument('--only', help='comma-separated cell ids: run just these flagged cells')
    a = ap.parse_args()
    if a.inject: inject(a.notebook, a.inject, a.allow_errors)
    else: sys.exit(1 if any(o['output_type'] == 'error' for r in run(a.notebook, a.flag, a.out, a.only and a.only.split(',')) for o in r['outputs']) else 0)
