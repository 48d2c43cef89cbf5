# phoenix-recsys: every target makes/refreshes the venv first, so a fresh clone needs only `make demo` / `make test`.
# The venv installs the package with every extra, at the exact versions in constraints.txt.
# Another Python: `make test PY=python3.13 VENV=.venv-3.13`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench bench-quality wheel clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m phoenix_recsys.cli.demo

# Tests run on every core (pytest-xdist), a test file per worker so module fixtures build once: most
# tests are single-threaded compiles and server round trips, so 2 workers on 2 cores take 5.5 min
# where one took 8.7. `make test WORKERS=0` runs them in one process.
WORKERS ?= auto
test: $(STAMP)
	$(BIN)/python -m pytest $(if $(filter 0,$(WORKERS)),,-n $(WORKERS) --dist loadfile)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

# Trains and evaluates on synthetic and public data (tens of minutes on 2 cores).
bench-quality: $(STAMP)
	$(BIN)/python -m benchmarks.run quality

# A wheel in dist/, as `pip install` would take it.
wheel: $(STAMP)
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir dist .

clean:
	rm -rf $(VENV) .venv-* build dist *.egg-info
