# Two set-up commands: `make demo` and `make test`. Both go through .venv/.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DURATION ?= 60

.PHONY: install demo test soak clean monitoring-tools

install: $(STAMP) monitoring-tools

# prometheus and promtool for the monitoring tests: Debian's package, or a message saying what to install.
monitoring-tools:
	@ops/bin/ensure-prometheus

# Re-installs only when pyproject.toml changes; `pip install -e` is idempotent.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/recostream up --duration $(DEMO_DURATION)

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The fault suite (tests/integration/test_faults.py) SOAK_RUNS times, each run with new random fault timings;
# stops at the first failing run (its log stays in run/).
SOAK_RUNS ?= 10
soak: install
	@mkdir -p run
	@for i in $$(seq $(SOAK_RUNS)); do \
	  seed=$$(od -An -N4 -tu4 /dev/urandom | tr -d ' '); \
	  echo "soak run $$i of $(SOAK_RUNS): RECOSTREAM_FAULT_SEED=$$seed"; \
	  RECOSTREAM_FAULT_SEED=$$seed $(BIN)/python -m pytest -q -s -p no:cacheprovider tests/integration/test_faults.py \
	    > run/soak-$$i.log 2>&1; status=$$?; \
	  grep -E ': produced|kills that|passed|failed' run/soak-$$i.log; \
	  [ $$status -eq 0 ] || { echo "soak run $$i failed: run/soak-$$i.log"; exit 1; }; \
	done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
