"""The docs site, opened in a real headless browser (Debian's Chromium driven by Playwright).

Built by `make docs` (tools/build_docs.py) into _docs/. Every lesson is a page in course order, each loads with its
title, navigation and images, no request fails or leaves the machine, search works; screenshots of the home page and
one lesson go to tests/artifacts/.
"""
import functools, http.server, re, shutil, socketserver, threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import ROOT, course_notebooks, notebook_title

DOCS = ROOT/'_docs'
ART = ROOT/'tests'/'artifacts'
CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage']


@pytest.fixture(scope='module')
def site():
    assert (DOCS/'index.html').exists(), '_docs/ is not built: run `make docs` first (make test does)'
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    handler = functools.partial(Quiet, directory=str(DOCS))
    srv = socketserver.ThreadingTCPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown(); srv.server_close()


@pytest.fixture(scope='module')
def browser():
    assert Path(CHROMIUM).exists(), 'Chromium is missing: apt-get install chromium (.ci/run does)'
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def _open(browser, url):
    "Open `url`; return (page, failures) where failures lists failed, 4xx/5xx or off-machine requests."
    page = browser.new_page(viewport={'width': 1280, 'height': 900})
    failures = []
    page.on('requestfailed', lambda r: failures.append(f'FAILED {r.url} ({r.failure})'))
    page.on('response', lambda r: r.status >= 400 and failures.append(f'HTTP {r.status} {r.url}'))
    page.on('request', lambda r: urlparse(r.url).hostname not in ('127.0.0.1', None) and not r.url.startswith('data:')
            and failures.append(f'OFF-MACHINE {r.url}'))
    page.goto(url, wait_until='networkidle')
    return page, failures


def reference_titles() -> list:
    "The API reference pages, one per exported module, in course order after the lessons: `learnft.<module>`."
    mods = [re.search(r'#\|\s*default_exp\s+(\w+)', p.read_text()) for p in sorted((ROOT/'nbs').glob('[0-9]*.ipynb'))]
    return [f'learnft.{m.group(1)}' for m in mods if m]


def test_every_lesson_is_a_page_in_course_order(site, browser):
    nbs = course_notebooks()
    titles = [notebook_title(p) for p in nbs] + reference_titles()
    page, failures = _open(browser, f'{site}/index.html')
    nav = [t.strip() for t in page.locator('nav.bd-docs-nav a.reference').all_inner_texts()]
    assert nav == titles, f'sidebar {nav} != course order {titles}'
    assert not failures, failures
    page.close()


@pytest.mark.parametrize('nb', course_notebooks(), ids=lambda p: p.stem)
def test_page_loads_with_title_nav_images(site, browser, nb):
    page, failures = _open(browser, f'{site}/{nb.stem}.html')
    title = notebook_title(nb)
    assert title in page.title(), f'{nb.stem}: page title {page.title()!r} lacks {title!r}'
    assert page.locator('h1').first.inner_text().strip().startswith(title)
    assert page.locator('nav.bd-docs-nav a.reference').count() == len(course_notebooks()) + len(reference_titles())
    broken = page.evaluate('Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)')
    assert not broken, f'{nb.stem}: images that did not load: {broken}'
    if 'class="math' in (DOCS/f'{nb.stem}.html').read_text():
        page.wait_for_selector('mjx-container', timeout=20000)  # formulas typeset by the offline MathJax
    assert not failures, f'{nb.stem}: {failures}'
    page.close()


def test_lessons_with_plots_show_them(site, browser):
    page, _ = _open(browser, f'{site}/00_models.html')
    assert page.locator('img').count() >= 1, 'the models lesson draws its parameter plot'
    assert page.get_by_text('Paris').count() >= 1, 'saved outputs (the first generation) are shown'
    page.close()


def test_search_finds_a_lesson(site, browser):
    page, failures = _open(browser, f'{site}/search.html?q=safetensors')
    page.wait_for_selector('#search-results li', timeout=20000)
    hits = page.locator('#search-results li a').all_inner_texts()
    assert any('bundled model' in h.lower() for h in hits), hits
    assert not failures, failures
    page.close()


def test_screenshots(site, browser):
    ART.mkdir(parents=True, exist_ok=True)
    for name in ['index', '00_models']:
        page, _ = _open(browser, f'{site}/{name}.html')
        out = ART/f'{name}.png'
        page.screenshot(path=str(out), full_page=False)
        assert out.stat().st_size > 10_000, f'{out} looks empty'
        page.close()


# What a saved output must never show: a machine's paths, progress-bar fragments, warnings written to stderr.
NOISE = re.compile(r'/root/|/tmp/|/home/|/work/|site-packages|\d+%\|[^\n|]{0,40}\||\d+(\.\d+)?(it|s)/(s|it)\]|'
                   r'\bTqdmWarning\b|\bFutureWarning\b|\bUserWarning\b|\bDeprecationWarning\b|\[WARNING\]')


@pytest.mark.parametrize('nb', course_notebooks(), ids=lambda p: p.stem)
def test_outputs_carry_no_machine_noise(site, browser, nb):
    page, _ = _open(browser, f'{site}/{nb.stem}.html')
    outputs = page.locator('div.cell_output').all_inner_texts()
    stderr = page.locator('div.cell_output div.stderr').all_inner_texts()   # a saved warning or notice, whatever it says
    page.close()
    assert not stderr, f'{nb.stem}: stderr in a saved output: {stderr[0][:200]!r}'
    hits = [m.group(0) + ' in: ' + o[max(0, m.start() - 60):m.end() + 20] for o in outputs for m in [NOISE.search(o)] if m]
    assert not hits, f'{nb.stem}: {hits[:3]}'


def test_noise_is_seen():
    "The pattern itself: each kind of noise is caught, a clean output is not."
    for bad in ['loaded from /root/.cache/x', 'copied to /tmp/tmpab/x.yaml', 'train:  50%|█████     | 3/6 [00:00<00:00,  5.08it/s]',
                '/work/main/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found',
                '[2026-12-02 03:17:53,568] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator to CPU']:
        assert NOISE.search(bad), bad
    assert not NOISE.search('copied to <tmp>/tmpab/x.yaml\n88 samples: 88 kept; utilisation 94.56% | rows 27')


def test_exercises_are_graded_with_folded_solutions(site, browser):
    from learnft.exercises import exercises
    page, failures = _open(browser, f'{site}/05_lora.html')
    section = page.locator('section#exercises')
    folded = section.locator('details.hide.above-input')
    assert folded.count() == len(exercises('05')) >= 3
    assert not page.evaluate("Array.from(document.querySelectorAll('section#exercises details')).some(d => d.open)"), 'a solution is open'
    code = folded.first.locator('div.cell_input')
    assert not code.is_visible()
    verdicts = section.locator('div.cell_output').all_inner_texts()
    assert sum(v.strip().startswith('✓ 05.') for v in verdicts) == len(exercises('05'))
    assert sum(v.strip().startswith('… 05.') for v in verdicts) == len(exercises('05'))   # the learner's empty cells
    folded.first.locator('summary').click()
    assert code.is_visible() and 'def lora_forward' in code.inner_text()
    ART.mkdir(parents=True, exist_ok=True)
    section.screenshot(path=str(ART/'05_lora_exercises.png'))
    assert not failures, failures
    page.close()


def test_infrastructure_is_folded_and_pictures_drawn(site, browser):
    "A long infrastructure cell is closed under its own summary; the new pictures are on their pages (screenshots for the record)."
    page, failures = _open(browser, f'{site}/07_qlora.html')      # (exported cells are the reference pages' business, not shown here)
    fold = page.locator('details.hide.above-input', has_text='Show the code: the 200-step run')
    assert fold.count() == 1 and not fold.first.locator('div.cell_input').is_visible()
    fold.first.locator('summary').click()
    assert 'def heldout_loss' in fold.first.locator('div.cell_input').inner_text()   # there, one click away
    page.close()
    ART.mkdir(parents=True, exist_ok=True)
    for name, anchor in (('09_tool_use', 'The loop in a picture'), ('02_datasets', 'In a picture, with one sample row')):
        page, failures2 = _open(browser, f'{site}/{name}.html')
        para = page.get_by_text(anchor)
        assert para.count() == 1, anchor
        img = para.locator('xpath=following::img[1]')                     # the figure the paragraph introduces
        assert img.evaluate('e => e.naturalWidth') > 500
        img.evaluate('e => e.scrollIntoView({block: "center"})')
        page.screenshot(path=str(ART/f'{name}_picture.png'), full_page=False)
        page.locator('section#exercises h2').evaluate('e => e.scrollIntoView({block: "start"})')
        page.screenshot(path=str(ART/f'{name}_exercises.png'), full_page=False)
        failures += failures2; page.close()
    assert not failures, failures


def test_reference_pages_document_every_function(site, browser):
    "Each module's page holds its functions' signatures and docstrings, and links back to its lesson."
    import importlib, inspect
    for title in reference_titles():
        mod = importlib.import_module(title)
        page, failures = _open(browser, f"{site}/api_{title.split('.')[1]}.html")
        text = page.locator('main').inner_text()
        funcs = [n for n in mod.__all__ if inspect.isfunction(getattr(mod, n)) and getattr(mod, n).__module__ == title]
        missing = [n for n in funcs if n not in text]
        assert not missing and not failures, (title, missing, failures)
        assert page.locator('main a[href$=".html"]').count() >= 1   # the lesson that builds the module
        page.close()
