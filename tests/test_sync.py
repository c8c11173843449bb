"The library is exported from the notebooks, and the notebooks are clean: nothing edited by hand, nothing stale."
import filecmp, shutil, subprocess, sys
from pathlib import Path
from conftest import ROOT

BIN = Path(sys.executable).parent


def _copy_project(dst):
    for f in ['settings.ini', 'setup.py', 'pyproject.toml']:
        if (ROOT/f).exists(): shutil.copy(ROOT/f, dst/f)
    shutil.copytree(ROOT/'nbs', dst/'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints'))
    shutil.copytree(ROOT/'learnft', dst/'learnft', ignore=shutil.ignore_patterns('__pycache__'))


def test_library_matches_notebooks(tmp_path):
    _copy_project(tmp_path)
    for f in (tmp_path/'learnft').glob('*.py'):
        if f.name != '__init__.py': f.unlink()
    subprocess.run([str(BIN/'nbdev_export')], cwd=tmp_path, check=True, capture_output=True)
    ours = sorted(p.name for p in (ROOT/'learnft').glob('*.py'))
    fresh = sorted(p.name for p in (tmp_path/'learnft').glob('*.py'))
    assert ours == fresh, f'modules differ from a fresh export: {set(ours) ^ set(fresh)}'
    stale = [n for n in ours if not filecmp.cmp(ROOT/'learnft'/n, tmp_path/'learnft'/n, shallow=False)]
    assert not stale, f'{stale} differ from a fresh nbdev_export of nbs/ -- edit the notebook and run nbdev_export'


def test_notebooks_are_clean(tmp_path):
    _copy_project(tmp_path)
    subprocess.run([str(BIN/'nbdev_clean')], cwd=tmp_path, check=True, capture_output=True)
    dirty = [p.name for p in (ROOT/'nbs').glob('*.ipynb')
             if (tmp_path/'nbs'/p.name).read_text() != p.read_text()]
    assert not dirty, f'{dirty} are not clean: run nbdev_clean'
