# phoenix-recsys: every target makes/refreshes .venv first, so a fresh clone needs only `make demo` / `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench bench-quality clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m phoenix_recsys.cli.demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

# Trains and evaluates on synthetic and public data (tens of minutes on 2 cores).
bench-quality: $(STAMP)
	$(BIN)/python -m benchmarks.run quality

clean:
	rm -rf $(VENV) build *.egg-info
