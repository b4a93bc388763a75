# `make demo`: set up .venv and run the vision experiment's mini preset (paper Tables 1-2) on CPU.
# `make demo-fig3`: set up .venv and run the quick arithmetic reproduction (paper Figure 3).
# `make test`: set up .venv and run the test suite (slow tests excluded; `make test-slow` runs them).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo demo-fig3 test test-slow lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/subind-bench run table1 --preset mini --out runs/table1-mini

demo-fig3: setup
	$(BIN)/subind-bench run fig3 --preset quick --out runs/fig3-quick

test: setup
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs
