# Two entry points (see README): `make demo` and `make test`. Both create .venv and install everything.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench clean

$(STAMP): pyproject.toml scripts/setup.sh
	PY=$(PY) VENV=$(VENV) bash scripts/setup.sh
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/layerinf demo --out runs/demo

# --durations: the 25 slowest tests are listed, so that CI logs show where the time goes. -n: one pytest-xdist
# worker per core (at most 4), a test file per worker (its module fixtures are built once), one torch thread each
test: $(STAMP)
	VENV=$(VENV) bash scripts/setup-test.sh
	$(BIN)/python -m pytest -q -ra --durations=25 -n auto --maxprocesses 4 --dist loadfile

# the inner loop: pure math and tiny random models (no real weights, no fine-tuning), under 2 minutes
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/bench_collect.py
	$(BIN)/python bench/bench_scoring.py
	$(BIN)/python bench/bench_scaleout.py

clean:
	rm -rf runs .pytest_cache build dist

# the claims study (examples/claims/README.md): every sweep, resumably, then docs/claims.md (many CPU hours)
claims: $(STAMP)
	$(BIN)/python scripts/claims_study.py
