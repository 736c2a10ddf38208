# Two set-up commands: `make demo` and `make test`. Both go through .venv/.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DURATION ?= 60

.PHONY: install demo test soak clean

install: $(STAMP)

# Re-installs only when pyproject.toml changes; `pip install -e` is idempotent.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/recostream up --duration $(DEMO_DURATION)

test: install
	$(BIN)/python -m pytest

# Not part of `make test`: the rebalance test of tests/test_reliability.py, ten times over.
soak: install
	for i in 1 2 3 4 5 6 7 8 9 10; do $(BIN)/python -m pytest -q tests/soak_rebalance.py || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
