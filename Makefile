PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/default.yaml

.PHONY: run test bench clean

$(BIN)/spanpipe: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/spanpipe

run: $(BIN)/spanpipe
	$(BIN)/spanpipe run --config $(CONFIG)

test: $(BIN)/spanpipe
	$(BIN)/python -m pytest -q

bench: $(BIN)/spanpipe
	$(BIN)/python bench/load.py

clean:
	rm -rf $(VENV) data
