# Two set-up commands: `make demo` and `make test`. Both go through .venv/.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DURATION ?= 60

.PHONY: install demo test bench clean

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

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
