"README.md is generated from nbs/index.ipynb; this fails when the two drift apart."
import subprocess, sys
from conftest import ROOT


def test_readme_matches_index():
    sys.path.insert(0, str(ROOT/'tools'))
    from make_readme import readme_from_notebook
    want = readme_from_notebook()
    have = (ROOT/'README.md').read_text()
    assert have == want, 'README.md differs from nbs/index.ipynb: run `python tools/make_readme.py` (make export)'


def test_readme_has_the_two_commands():
    text = (ROOT/'README.md').read_text()
    assert '`make lab`' in text or 'make lab ' in text
    assert 'make test' in text


def test_readme_check_mode_detects_drift(tmp_path):
    # the --check mode must fail on a drifted README (a test that cannot fail is a defect)
    import shutil
    (tmp_path/'tools').mkdir(); (tmp_path/'nbs').mkdir()
    shutil.copy(ROOT/'tools'/'make_readme.py', tmp_path/'tools')
    shutil.copy(ROOT/'nbs'/'index.ipynb', tmp_path/'nbs')
    (tmp_path/'README.md').write_text('stale\n')
    r = subprocess.run([sys.executable, str(tmp_path/'tools'/'make_readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode != 0 and 'differs' in r.stderr
    subprocess.run([sys.executable, str(tmp_path/'tools'/'make_readme.py')], check=True, capture_output=True)
    r = subprocess.run([sys.executable, str(tmp_path/'tools'/'make_readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
