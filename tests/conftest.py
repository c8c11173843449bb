import json, os, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
from learnft.models import offline
offline()                # every test: nothing from a model or dataset hub


def pytest_addoption(parser):
    parser.addoption('--slow', action='store_true', help='also run tests marked slow (long training)')


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: long-running; skipped unless --slow is given')


def pytest_collection_modifyitems(config, items):
    if config.getoption('--slow'): return
    skip = pytest.mark.skip(reason='slow: run with --slow')
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)


def notebook_title(path: Path) -> str:
    "The `# Title` of a lesson notebook's first markdown cell (nbdev's front matter), as a page shows it (no code ticks)."
    nb = json.loads(Path(path).read_text())
    for c in nb['cells']:
        if c['cell_type'] == 'markdown':
            m = re.match(r'#\s+(.+)', ''.join(c['source']).strip())
            if m: return re.sub(r'`|\*\*', '', m.group(1)).strip()
    raise AssertionError(f'{path} has no "# Title" markdown cell')


def course_notebooks():
    "Lesson notebooks in reading order: index first, then by number."
    nbs = [p for p in (ROOT/'nbs').glob('*.ipynb')]
    return sorted(nbs, key=lambda p: (p.stem != 'index', p.stem))
