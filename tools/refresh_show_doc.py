"""The API reference cells (`show_doc(name)`) of the lessons, rendered from the library as it is now.

`skip_procs = exec_show_docs` (settings.ini) means the docs build shows the *saved* output of each `show_doc` cell, so a
signature, docstring or source-line link goes stale as soon as the library changes and the lesson is not re-executed.
`tests/test_show_doc.py` fails on any stale cell (using `render` below); this rewrites them:

    .venv/bin/python tools/refresh_show_doc.py            # every lesson; prints what changed
    .venv/bin/python tools/refresh_show_doc.py --check    # only report (exit 1 if anything is stale)

Each cell's name is looked up in the lesson's own module (`#| default_exp`): a lesson documents what it exports.
"""
import argparse, ast, importlib, json, re, sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOW_DOC = re.compile(r'^show_doc\(([\w.]+)\)$')


def default_exp(cells) -> str:
    for c in cells:
        m = re.search(r'^#\|\s*default_exp\s+(\S+)', ''.join(c['source']), re.M)
        if m: return m.group(1)


@lru_cache(None)
def def_lines(module: str) -> dict:
    "`{name or Class.method: line}` of the top-level definitions in `learnft/<module>.py`."
    tree = ast.parse((ROOT/'learnft'/f'{module}.py').read_text(encoding='utf-8'))
    out = {}
    for t in tree.body:
        if isinstance(t, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[t.name] = t.lineno
            if isinstance(t, ast.ClassDef):
                out.update({f'{t.name}.{s.name}': s.lineno for s in t.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))})
    return out


def render(module: str, name: str) -> dict:
    "The `show_doc` output of `learnft.<module>.<name>` as a notebook shows it: `{'text/markdown': ..., 'text/plain': ...}`."
    from nbdev.showdoc import show_doc
    obj = importlib.import_module(f'learnft.{module}')
    for part in name.split('.'): obj = getattr(obj, part)
    top = getattr(importlib.import_module(f'learnft.{module}'), name.split('.')[0])
    owner = getattr(top, '__module__', None)                # a method's or property's: its class's
    if owner != f'learnft.{module}':
        raise LookupError(f'show_doc({name}) in the lesson of learnft.{module} documents {owner}.{name}: document it in its own lesson')
    r = show_doc(obj)
    md = r._repr_markdown_()
    # nbdev finds the line of a symbol defined in the notebook itself, not of one imported from the library: do what it does
    md = re.sub(r'(learnft/\w+\.py)#LNone', lambda m: f'{m.group(1)}#L{def_lines(module).get(name)}', md)
    return {'text/markdown': md, 'text/plain': repr(r)}


def cells_of(path: Path):
    "`(notebook, module, [(cell, name), ...])` for one lesson's show_doc cells."
    nb = json.loads(path.read_text(encoding='utf-8'))
    module = default_exp(nb['cells'])
    found = []
    for c in nb['cells']:
        m = SHOW_DOC.match(''.join(c['source']).strip()) if c['cell_type'] == 'code' else None
        if m: found.append((c, m.group(1)))
    return nb, module, found


def saved(cell) -> dict:
    data = next((o['data'] for o in cell.get('outputs', []) if o.get('output_type') == 'execute_result'), {})
    return {k: ''.join(v) if isinstance(v, list) else v for k, v in data.items() if k in ('text/markdown', 'text/plain')}


def refresh(path: Path, check: bool=False) -> list:
    "Names whose saved output differs from the library's; rewritten in place unless `check`."
    nb, module, found = cells_of(path)
    stale = []
    for cell, name in found:
        fresh = render(module, name)
        if saved(cell) == fresh: continue
        stale.append(name)
        cell['outputs'] = [{'data': {k: v.splitlines(keepends=True) for k, v in fresh.items()}, 'execution_count': None,
                            'metadata': {}, 'output_type': 'execute_result'}]
    if stale and not check:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    return stale


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('notebooks', nargs='*', help='default: every lesson in nbs/')
    ap.add_argument('--check', action='store_true', help='report stale cells, change nothing (exit 1 if any)')
    a = ap.parse_args()
    paths = [Path(p) for p in a.notebooks] or sorted((ROOT/'nbs').glob('[0-9]*.ipynb'))
    total = 0
    for p in paths:
        s = refresh(p, a.check); total += len(s)
        if s: print(f'{p.name}: {len(s)} stale: {", ".join(s)}')
    print(f'{total} show_doc cells {"stale" if a.check else "refreshed"}')
    sys.exit(1 if a.check and total else 0)
