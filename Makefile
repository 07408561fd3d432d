# Two entry points for a fresh clone; both bootstrap .venv from python3 alone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dmft validate --config scripts/configs/default.toml --out results/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --durations=20

bench: $(STAMP)
	$(BIN)/python scripts/bench_dmft.py

clean:
	rm -rf $(VENV) results .pytest_cache
